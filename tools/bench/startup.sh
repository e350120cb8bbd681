#!/usr/bin/env bash
# tools/bench/startup.sh: start-up latency of hutch next to bubblewrap, crun and a bare unshare.
#
# For each identity (root, and an unprivileged user through runuser), ONE hyperfine run measures
# side by side the wall time of running `true` through:
#   hutch run      hutch --root TMP run --rootfs ROOT true          (a fresh sandbox per run)
#   hutch run -ro  hutch --root TMP run --read-only --rootfs ROOT true (no writable layer, as bwrap)
#   hutch exec     hutch --root TMP exec bench -- true              (persistent sandbox made before)
#   bwrap          bwrap --unshare-all --ro-bind ROOT / --proc /proc --dev /dev true
#   crun run       crun run of an OCI bundle whose rootfs is ROOT (see "crun" below)
#   unshare        unshare -Urmnpif --mount-proc true               (floor: bare namespaces)
#   true           true                                             (floor: fork+exec+wait)
# ROOT is a private copy of hutch's built-in busybox tree. See tools/bench/README.md.
#
# crun: this host's cgroups are a v1/v2 hybrid, which crun refuses. The script never writes,
# mounts or unmounts anything under the host's /sys/fs/cgroup. Instead a helper process (started
# once per identity, outside the measured time) enters a private mount namespace (a user namespace
# too when unprivileged), recursively binds / onto TMP/newroot, mounts a fresh tmpfs on
# TMP/newroot/sys (a mount on the bind copy) with an empty sys/fs/cgroup directory in it, and
# pivot_roots into TMP/newroot. crun then runs there through `nsenter -t HELPER ...` with
# --cgroup-manager=disabled and a config.json without cgroupsPath/resources/cgroup mounts.
# nsenter is a wrapper (not a shell) that cannot be kept out of the measured time, so the same
# hyperfine run also measures `nsenter ... true` and `true`, and the table reports
#   crun net = median(nsenter+crun) - (median(nsenter+true) - median(true)).
#
# Usage: tools/bench/startup.sh [--out DIR] [--user NAME | --no-user] [--hutch BIN] [--rootfs DIR]
# Environment: RUNS (default 200), WARMUP (default 10), INTERLEAVED_RUNS (default 200; 0: no
# interleaved pass).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)

RUNS=${RUNS:-200}
WARMUP=${WARMUP:-10}
INTERLEAVED_RUNS=${INTERLEAVED_RUNS:-200}
OUT=/tmp/hutch-bench
HUTCH_SRC=$REPO/build/hutch
BASE_ROOTFS=$REPO/build/rootfs/busybox
BENCH_USER=
USER_GIVEN=0
NO_USER=0
CLEAN_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

die() { echo "startup.sh: $*" >&2; exit 1; }
note() {
    echo "!! $*" >&2
    [ -z "${NOTES_FILE:-}" ] || echo "$*" >>"$NOTES_FILE"
}

while [ $# -gt 0 ]; do
    case $1 in
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        --user) BENCH_USER=${2:?--user needs a user name}; USER_GIVEN=1; shift 2 ;;
        --user=*) BENCH_USER=${1#*=}; USER_GIVEN=1; shift ;;
        --no-user) NO_USER=1; shift ;;
        --hutch) HUTCH_SRC=${2:?}; shift 2 ;;
        --rootfs) BASE_ROOTFS=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

case $RUNS in ''|*[!0-9]*) die "RUNS must be a number" ;; esac
case $WARMUP in ''|*[!0-9]*) die "WARMUP must be a number" ;; esac
for tool in hyperfine jq unshare nsenter pivot_root; do
    command -v "$tool" >/dev/null 2>&1 || die "needs $tool"
done
[ -x "$HUTCH_SRC" ] || die "no hutch binary at $HUTCH_SRC (build it: cd $REPO && meson compile -C build)"
[ -d "$BASE_ROOTFS" ] || die "no root filesystem tree at $BASE_ROOTFS (build hutch first)"

# The identities to measure: "label user" pairs; an empty user is the invoking identity.
. "$SCRIPT_DIR/identities.sh"

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
NOTES_FILE=$OUT/notes.txt
: >"$NOTES_FILE"

TMP=$(mktemp -d /tmp/hutch-bench.XXXXXX)
# Sandboxes map their root to other ids (subordinate ranges): they must be able to walk to ROOT.
chmod 0755 "$TMP"

# ----------------------------------------------------------------------------------------------
# Per-identity state, for the cleanup.
SET_LABEL='' SET_USER='' SET_IS_ROOT=0 W='' HOLDER_PID='' HOLDER_WRAPPER='' NSFLAGS='' CID='' CRUN='' EXEC_CREATED=0 PREFLIGHT_WHY=''

run_as() {
    if [ -n "$SET_USER" ]; then
        runuser -u "$SET_USER" -- env -i PATH="$CLEAN_PATH" HOME="$W" USER="$SET_USER" \
            LOGNAME="$SET_USER" LANG=C.UTF-8 "$@"
    else
        "$@"
    fi
}

holder_alive() {
    [ -n "$HOLDER_PID" ] && [ -r "/proc/$HOLDER_PID/cmdline" ] &&
        tr '\0' ' ' <"/proc/$HOLDER_PID/cmdline" 2>/dev/null | grep -q '^sleep infinity'
}

cleanup_set() {
    set +e
    if [ "$EXEC_CREATED" -eq 1 ]; then
        run_as "$W/bin/hutch" --root "$W/hutch-exec" rm -f bench >/dev/null 2>&1 ||
            note "$SET_LABEL: could not remove the persistent sandbox bench under $W/hutch-exec"
        EXEC_CREATED=0
    fi
    if holder_alive; then
        if [ -n "$CID" ]; then
            # shellcheck disable=SC2086
            run_as nsenter $NSFLAGS crun --root "$W/crun-state" delete -f "$CID" >/dev/null 2>&1
            # shellcheck disable=SC2086
            run_as nsenter $NSFLAGS crun --root "$W/crun-state" delete -f "$CID-check" >/dev/null 2>&1
        fi
        kill "$HOLDER_PID" 2>/dev/null
    fi
    if [ -n "$HOLDER_WRAPPER" ]; then
        wait "$HOLDER_WRAPPER" 2>/dev/null
        HOLDER_WRAPPER=
    fi
    HOLDER_PID=
    set -e
}

cleanup() {
    local rc=$?
    set +e
    [ -z "$W" ] || cleanup_set
    if [ -n "${TMP:-}" ] && [ -d "$TMP" ]; then
        case $TMP in
            /tmp/hutch-bench.*) rm -rf --one-file-system "$TMP" || echo "!! could not remove $TMP" >&2 ;;
        esac
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# preflight NAME EXPECTED CMD...: runs CMD as the set's identity, 0 if it exits EXPECTED.
preflight() {
    local name=$1 expected=$2 rc=0
    shift 2
    run_as "$@" >"$W/log/$name.log" 2>&1 </dev/null || rc=$?
    if [ "$rc" -ne "$expected" ]; then
        PREFLIGHT_WHY="exit $rc (expected $expected): $(tail -n 2 "$W/log/$name.log" | tr '\n' ' ')"
        return 1
    fi
    return 0
}

# Starts the helper whose mount namespace crun runs in (see the header). Not measured.
start_holder() {
    local uflag=
    [ "$SET_IS_ROOT" -eq 1 ] || uflag=-r
    rm -f "$W/holder.pid" "$W/holder.ready"
    # shellcheck disable=SC2016,SC2086
    run_as unshare $uflag -m --propagation private sh -c '
        set -e
        echo $$ >"$1/holder.pid"
        mount --rbind / "$1/newroot"
        mount -t tmpfs -o mode=0755,size=1m hutch-bench-sys "$1/newroot/sys"
        mkdir -p "$1/newroot/sys/fs/cgroup"
        cd "$1/newroot"
        pivot_root . ".$1/oldroot"
        cd /
        : >"$1/holder.ready"
        exec sleep infinity' holder "$W" </dev/null >"$W/log/holder.log" 2>&1 &
    HOLDER_WRAPPER=$!
    local i
    for i in $(seq 100); do
        [ -e "$W/holder.ready" ] && break
        kill -0 "$HOLDER_WRAPPER" 2>/dev/null || break
        sleep 0.05
    done
    [ -s "$W/holder.pid" ] && HOLDER_PID=$(cat "$W/holder.pid")
    if [ ! -e "$W/holder.ready" ] || ! holder_alive; then
        PREFLIGHT_WHY="could not set up the private mount namespace: $(tail -n 2 "$W/log/holder.log" | tr '\n' ' ')"
        return 1
    fi
    if [ "$SET_IS_ROOT" -eq 1 ]; then
        NSFLAGS="-t $HOLDER_PID -m -r -w"
    else
        NSFLAGS="-t $HOLDER_PID -U -m -r -w --preserve-credentials"
    fi
}

# Makes W/bundle (args true) and W/check (sh -c 'exit 7'), and checks crun really runs them.
setup_crun() {
    command -v crun >/dev/null 2>&1 || { PREFLIGHT_WHY="crun is not installed"; return 1; }
    start_holder || return 1
    local specflag=
    [ "$SET_IS_ROOT" -eq 1 ] || specflag=--rootless
    # The spec is made inside the namespace, so that a rootless spec maps the id crun will see.
    # shellcheck disable=SC2016,SC2086
    preflight crun-spec 0 nsenter $NSFLAGS sh -c 'cd "$1" && rm -f config.json && crun spec $2' \
        spec "$W/bundle" "$specflag" || return 1
    jq --arg root "$W/root" '
        .process.terminal = false | .process.args = ["true"] | .root.path = $root
        | del(.linux.cgroupsPath) | del(.linux.resources)
        | .mounts |= map(select(.type != "cgroup" and .type != "cgroup2"))' \
        "$W/bundle/config.json" >"$W/config.tmp" || { PREFLIGHT_WHY="cannot edit config.json"; return 1; }
    jq '.process.args = ["sh", "-c", "exit 7"]' "$W/config.tmp" >"$W/check/config.json" || return 1
    mv -f "$W/config.tmp" "$W/bundle/config.json" || return 1
    [ -z "$SET_USER" ] || chown "$SET_USER:" "$W/bundle/config.json" "$W/check/config.json"
    CID=hutch-bench-$$-$SET_LABEL
    CRUN="crun --root $W/crun-state --cgroup-manager=disabled"
    # shellcheck disable=SC2086
    preflight crun-true 0 nsenter $NSFLAGS $CRUN run --bundle "$W/bundle" "$CID" || return 1
    # shellcheck disable=SC2086
    preflight crun-exit7 7 nsenter $NSFLAGS $CRUN run --bundle "$W/check" "$CID-check" || {
        PREFLIGHT_WHY="crun does not pass on the container's exit status: $PREFLIGHT_WHY"; return 1; }
    if [ -n "$(ls -A "$W/crun-state")" ]; then
        PREFLIGHT_WHY="crun run left state behind in $W/crun-state"
        return 1
    fi
}

declare -A MEDIAN FAILS IMEDIAN IFAILS
declare -a ORDER=(hutch-run hutch-run-ro hutch-exec bwrap crun-net crun-raw nsenter unshare true)
declare -A TITLE=(
    [hutch-run]="hutch run --rootfs ROOT true"
    [hutch-run-ro]="hutch run --read-only ... true"
    [hutch-exec]="hutch exec bench -- true"
    [bwrap]="bwrap --unshare-all ... true"
    [crun-net]="crun run (net of nsenter)"
    [crun-raw]="  nsenter + crun run"
    [nsenter]="  nsenter + true (wrapper)"
    [unshare]="unshare -Urmnpif --mount-proc"
    [true]="true (fork+exec floor)"
)

bench_set() {
    SET_LABEL=$1 SET_USER=$2
    SET_IS_ROOT=0
    if [ -z "$SET_USER" ] && [ "$(id -u)" -eq 0 ]; then SET_IS_ROOT=1; fi
    W=$TMP/$SET_LABEL
    CID='' EXEC_CREATED=0 HOLDER_PID='' HOLDER_WRAPPER='' NSFLAGS=''
    echo "=== $SET_LABEL: preparing ==="
    mkdir -p "$W/bin" "$W/log" "$W/json" "$W/bundle" "$W/check" "$W/crun-state" \
        "$W/newroot" "$W/oldroot"
    cp -a "$BASE_ROOTFS" "$W/root"
    cp "$HUTCH_SRC" "$W/bin/hutch"
    [ -z "$SET_USER" ] || chown -R "$SET_USER:" "$W"
    chmod 0755 "$W"
    cd "$W"

    local -a names=() cmds=() preps=()
    add() { names+=("$1"); cmds+=("$2"); preps+=("${3:-true}"); }

    if preflight hutch-run 0 "$W/bin/hutch" --root "$W/hutch-run" run --rootfs "$W/root" true; then
        add hutch-run "$W/bin/hutch --root $W/hutch-run run --rootfs $W/root true"
    else
        note "$SET_LABEL: hutch run skipped: $PREFLIGHT_WHY"
    fi
    # A read-only root like bwrap's --ro-bind: no writable layer (see --read-only in README.md).
    if preflight hutch-run-ro 0 "$W/bin/hutch" --root "$W/hutch-run" run --read-only --rootfs "$W/root" true; then
        add hutch-run-ro "$W/bin/hutch --root $W/hutch-run run --read-only --rootfs $W/root true"
    else
        note "$SET_LABEL: hutch run --read-only skipped: $PREFLIGHT_WHY"
    fi

    if preflight hutch-create 0 "$W/bin/hutch" --root "$W/hutch-exec" create --name bench --rootfs "$W/root"; then
        EXEC_CREATED=1
        if preflight hutch-exec 0 "$W/bin/hutch" --root "$W/hutch-exec" exec bench -- true; then
            add hutch-exec "$W/bin/hutch --root $W/hutch-exec exec bench -- true"
        else
            note "$SET_LABEL: hutch exec skipped: $PREFLIGHT_WHY"
        fi
    else
        EXEC_CREATED=1  # a half-made sandbox is removed as well
        note "$SET_LABEL: hutch exec skipped (hutch create failed): $PREFLIGHT_WHY"
    fi

    if ! command -v bwrap >/dev/null 2>&1; then
        note "$SET_LABEL: bwrap skipped: bubblewrap is not installed"
    elif preflight bwrap 0 bwrap --unshare-all --ro-bind "$W/root" / --proc /proc --dev /dev true; then
        add bwrap "bwrap --unshare-all --ro-bind $W/root / --proc /proc --dev /dev true"
    else
        note "$SET_LABEL: bwrap skipped: $PREFLIGHT_WHY"
    fi

    if setup_crun; then
        add crun-raw "nsenter $NSFLAGS $CRUN run --bundle $W/bundle $CID" \
            "nsenter $NSFLAGS crun --root $W/crun-state delete -f $CID"
        add nsenter "nsenter $NSFLAGS true"
    else
        note "$SET_LABEL: crun skipped: $PREFLIGHT_WHY"
    fi

    if preflight unshare 0 unshare -Urmnpif --mount-proc true; then
        add unshare "unshare -Urmnpif --mount-proc true"
    else
        note "$SET_LABEL: unshare skipped: $PREFLIGHT_WHY"
    fi
    add true "true"

    local -a args=(-N -i --style basic --warmup "$WARMUP" --runs "$RUNS"
        --export-json "$W/json/startup.json" --export-markdown "$W/json/startup.md")
    local i
    for i in "${!names[@]}"; do args+=(--prepare "${preps[$i]}"); done
    for i in "${!names[@]}"; do args+=(-n "${names[$i]}"); done
    args+=("${cmds[@]}")

    # What preparing the trees (and the preflights) left to write goes to disk now, not during
    # the first command measured.
    sync
    echo "=== $SET_LABEL: hyperfine (${#names[@]} commands, warmup $WARMUP, runs $RUNS) ==="
    if ! run_as hyperfine "${args[@]}"; then
        note "$SET_LABEL: hyperfine failed"
    fi

    # The same commands (crun aside: it needs a delete between runs) in alternating rounds with a
    # pause after each (interleaved.py --gap): hyperfine's blocks meet the VM's drift at different
    # times, and back to back a command pays for what the previous one left the kernel to do.
    if [ "$INTERLEAVED_RUNS" -gt 0 ]; then
        local -a icmds=() inames=()
        for i in "${!names[@]}"; do
            case ${names[$i]} in crun-raw|nsenter) continue ;; esac
            inames+=("${names[$i]}")
            icmds+=("${cmds[$i]}")
        done
        cp "$SCRIPT_DIR/interleaved.py" "$W/bin/"
        sync
        echo "=== $SET_LABEL: interleaved (${#icmds[@]} commands, $INTERLEAVED_RUNS rounds, --gap 10) ==="
        # It exits 1 when any run failed; the medians are kept, marked (!) as in the first table.
        run_as python3 "$W/bin/interleaved.py" --runs "$INTERLEAVED_RUNS" --gap 10 --json "$W/json/interleaved.json" \
            "${icmds[@]}" || true
        if [ -s "$W/json/interleaved.json" ]; then
            cp "$W/json/interleaved.json" "$OUT/interleaved-$SET_LABEL.json"
            for i in "${!inames[@]}"; do
                IMEDIAN[$SET_LABEL|${inames[$i]}]=$(jq -r ".results[$i].median_ms" "$W/json/interleaved.json")
                IFAILS[$SET_LABEL|${inames[$i]}]=$(jq -r ".results[$i].failed" "$W/json/interleaved.json")
            done
        else
            note "$SET_LABEL: interleaved run failed"
        fi
    fi

    if [ -s "$W/json/startup.json" ]; then
        cp "$W/json/startup.json" "$OUT/startup-$SET_LABEL.json"
        cp "$W/json/startup.md" "$OUT/startup-$SET_LABEL.md"
        local name median fails
        while read -r name median fails; do
            MEDIAN[$SET_LABEL|$name]=$median
            FAILS[$SET_LABEL|$name]=$fails
            [ "$fails" -eq 0 ] || note "$SET_LABEL: $name: $fails of $RUNS measured runs exited non-zero"
        done < <(jq -r '.results[] | "\(.command) \(.median * 1000) \([.exit_codes[] | select(. != 0)] | length)"' \
            "$W/json/startup.json")
        if [ -n "${MEDIAN[$SET_LABEL|crun-raw]:-}" ]; then
            MEDIAN[$SET_LABEL|crun-net]=$(awk -v c="${MEDIAN[$SET_LABEL|crun-raw]}" \
                -v n="${MEDIAN[$SET_LABEL|nsenter]}" -v t="${MEDIAN[$SET_LABEL|true]}" \
                'BEGIN { printf "%.4f", c - (n - t) }')
            FAILS[$SET_LABEL|crun-net]=$(( ${FAILS[$SET_LABEL|crun-raw]} + ${FAILS[$SET_LABEL|nsenter]} ))
        fi
        if [ -n "$(ls -A "$W/crun-state" 2>/dev/null)" ]; then
            note "$SET_LABEL: crun left state behind in its --root after the benchmark"
        fi
    fi

    cd /
    cleanup_set
    rm -rf --one-file-system "$W"
    W=
}

for set in "${SETS[@]}"; do
    bench_set "${set%%:*}" "${set#*:}"
done

# ----------------------------------------------------------------------------------------------
# print_table MEDIANS FAILS ROWS: one row per benchmark (ROWS "measured": only those the first
# identity has), one column per identity; medians in ms, (!) where runs failed.
print_table() {
    local -n medians=$1 fails=$2
    local key set label v cell
    printf '%-32s' "benchmark"
    for set in "${SETS[@]}"; do printf '%14s' "${set%%:*}"; done
    echo
    for key in "${ORDER[@]}"; do
        [ "$3" = all ] || [ -n "${medians[${SETS[0]%%:*}|$key]:-}" ] || continue
        printf '%-32s' "${TITLE[$key]}"
        for set in "${SETS[@]}"; do
            label=${set%%:*}
            v=${medians[$label|$key]:-}
            cell=skipped
            if [ -n "$v" ]; then
                cell=$(awk -v v="$v" 'BEGIN { printf "%.2f", v }')
                [ "${fails[$label|$key]:-0}" -eq 0 ] || cell="$cell(!)"
            fi
            printf '%14s' "$cell"
        done
        echo
    done
}

CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
{
    echo
    echo "hutch start-up, median wall time in ms (hyperfine -N, warmup $WARMUP, $RUNS runs, ROOT = busybox copy)"
    echo "kernel $(uname -r), $(nproc) CPUs${CPU_MODEL:+ ($CPU_MODEL)}, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "$("$HUTCH_SRC" --version 2>/dev/null | head -n 1), $(crun --version 2>/dev/null | head -n 1),"\
         "$(bwrap --version 2>/dev/null), $(hyperfine --version)"
    print_table MEDIAN FAILS all
    echo "crun net = (nsenter + crun run) - ((nsenter + true) - true): nsenter enters the helper namespace"
    echo "that hides the hybrid cgroup tree from crun; its own cost is measured and subtracted."
    echo "(!) = some measured runs exited non-zero. Raw hyperfine JSON/markdown: $OUT"
    if [ "$INTERLEAVED_RUNS" -gt 0 ]; then
        echo
        echo "The same, interleaved: $INTERLEAVED_RUNS alternating rounds, 10 ms apart (tools/bench/interleaved.py"
        echo "--gap 10); medians in ms, each including Python's fork and exec of the command (see the true row)"
        print_table IMEDIAN IFAILS measured
    fi
    if [ -s "$NOTES_FILE" ]; then
        echo "Not measured / problems:"
        sed 's/^/  /' "$NOTES_FILE"
    fi
} | tee "$OUT/summary.txt"
