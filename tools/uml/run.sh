#!/bin/bash
# Runs a command inside User-Mode Linux, on a pure cgroup v2 hierarchy, as root or as a user with
# a delegated cgroup subtree, and returns its exit status. See README.md beside this file.
#
#   tools/uml/run.sh [--user NAME] [--timeout SECS] [--mem SIZE] [--rw DIR]... [--tmpfs DIR]...
#                    [--env NAME[=VALUE]]... [--keep] [--verbose] -- CMD [ARG...]
#
#   --user NAME      run CMD as NAME (setpriv) in .../user@UID.service/app.slice/uml-run.scope,
#                    user@UID.service delegated to NAME; default: root, in system.slice/uml-run.service
#   --timeout SECS   kill the VM after SECS seconds (default 600) and exit 124
#   --mem SIZE       the VM's memory (default 768M)
#   --rw DIR         share the host directory DIR read-write at the same path (repeatable); the rest
#                    of the host's / is seen read-only under a tmpfs overlay, so writes are lost
#   --tmpfs DIR      an empty tmpfs at DIR in the guest (repeatable); /tmp, /var/tmp, /run, /home,
#                    /root, /dev/shm and /var/lib/hutch always are
#   --env NAME[=VAL] pass one more variable (PATH, HUTCH_*, LANG, LC_*, TERM, TZ, CI, PYTHON* pass anyway)
#   --keep           keep the exchange directory (console log, init log) and print its path
#   --verbose        print the VM's console log on stderr when it ends
#
# Exit status: CMD's; 124 on timeout; 77 when UML cannot run here (one line "uml: cannot run: ..."
# on stderr); 125 when the VM booted but died before CMD's status was known.
set -u

case "${BASH_SOURCE[0]}" in */*) here=${BASH_SOURCE[0]%/*} ;; *) here=. ;; esac
here=$(cd "$here" && pwd -P)
init=${UML_INIT_OVERRIDE:-$here/init.sh}

user=""
timeout=600
mem=768M
keep=0
verbose=0
rw=()
tmpfs=()
extra_env=()

usage() {
    sed -n '5,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --user) user=${2:?--user needs a name}; shift 2 ;;
        --user=*) user=${1#*=}; shift ;;
        --timeout) timeout=${2:?--timeout needs seconds}; shift 2 ;;
        --timeout=*) timeout=${1#*=}; shift ;;
        --mem) mem=${2:?--mem needs a size}; shift 2 ;;
        --mem=*) mem=${1#*=}; shift ;;
        --rw) rw+=("${2:?--rw needs a directory}"); shift 2 ;;
        --rw=*) rw+=("${1#*=}"); shift ;;
        --tmpfs) tmpfs+=("${2:?--tmpfs needs a directory}"); shift 2 ;;
        --tmpfs=*) tmpfs+=("${1#*=}"); shift ;;
        --env) extra_env+=("${2:?--env needs a name}"); shift 2 ;;
        --env=*) extra_env+=("${1#*=}"); shift ;;
        --keep) keep=1; shift ;;
        --verbose) verbose=1; shift ;;
        -h | --help) usage ;;
        --) shift; break ;;
        *) echo "uml: unknown option '$1' (CMD goes after --)" >&2; usage ;;
    esac
done
[ $# -gt 0 ] || { echo "uml: no command given" >&2; usage; }
case "$timeout" in '' | *[!0-9]*) echo "uml: --timeout wants whole seconds" >&2; exit 2 ;; esac
case "$mem" in [0-9]*[KMG] | [0-9]*) ;; *) echo "uml: --mem wants e.g. 768M" >&2; exit 2 ;; esac

cannot_run() {
    echo "uml: cannot run: $*" >&2
    exit 77
}

# --- Can UML run here at all?
linux=$(command -v linux 2>/dev/null || true)
[ -n "$linux" ] && [ -x "$linux" ] || cannot_run "no 'linux' binary (apt-get install user-mode-linux)"
[ "$(uname -m)" = x86_64 ] || cannot_run "Debian's UML kernel is for x86_64, this is $(uname -m)"
command -v busybox >/dev/null || cannot_run "no busybox on the host (the guest loads modules and powers off with it)"
command -v setpriv >/dev/null || cannot_run "no setpriv on the host (util-linux)"
if [ -n "$user" ]; then
    id -u "$user" >/dev/null 2>&1 || { echo "uml: no such user on the host: $user" >&2; exit 2; }
fi
case "$init" in *[[:space:]]*) cannot_run "the path $init contains white space, which the kernel command line cannot carry" ;; esac

# --- The exchange directory: the VM mounts it read-write through hostfs.
base=${UML_TMPDIR:-/tmp}
xchg=$(mktemp -d "$base/hutch-uml.XXXXXX") || cannot_run "cannot create a directory in $base"
chmod 0700 "$xchg"
case "$xchg" in *[[:space:]]*) cannot_run "the path $xchg contains white space" ;; esac

vm_pid=""
tails=()
quiet_err=0
cleanup() {
    if [ "$quiet_err" = 1 ]; then exec 2>&4 4>&-; fi
    if [ -n "$vm_pid" ] && kill -0 "$vm_pid" 2>/dev/null; then
        kill -KILL -- "-$vm_pid" 2>/dev/null
    fi
    for t in "${tails[@]}"; do kill "$t" 2>/dev/null; done
    if [ "$keep" = 1 ]; then
        echo "uml: kept $xchg" >&2
    else
        rm -rf "$xchg"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# Single-quotes a string for sh.
q() {
    local s=${1//\'/\'\\\'\'}
    printf "'%s'" "$s"
}

{
    printf 'UML_USER=%s\n' "$(q "$user")"
    printf 'UML_CWD=%s\n' "$(q "$PWD")"
    rwlist=""
    for d in "${rw[@]}"; do
        abs=$(cd "$d" 2>/dev/null && pwd -P) || { echo "uml: --rw $d: no such directory" >&2; exit 2; }
        rwlist+="$abs"$'\n'
    done
    printf 'UML_RW=%s\n' "$(q "$rwlist")"
    tlist=""
    for d in "${tmpfs[@]}"; do
        case "$d" in /*) ;; *) echo "uml: --tmpfs $d: give an absolute path" >&2; exit 2 ;; esac
        tlist+="$d"$'\n'
    done
    printf 'UML_TMPFS=%s\n' "$(q "$tlist")"
    echo 'uml_env() {'
    while IFS= read -r name; do
        case "$name" in
            PATH | HUTCH_* | LANG | LANGUAGE | LC_* | TERM | TZ | CI | PYTHON*) ;;
            *) continue ;;
        esac
        printf '    export %s=%s\n' "$name" "$(q "${!name}")"
    done < <(compgen -e)
    for e in "${extra_env[@]}"; do
        name=${e%%=*}
        case "$name" in '' | [0-9]* | *[!A-Za-z0-9_]*) echo "uml: --env $e: not a variable name" >&2; exit 2 ;; esac
        if [ "$name" != "$e" ]; then
            printf '    export %s=%s\n' "$name" "$(q "${e#*=}")"
        elif [ -n "${!name+set}" ]; then
            printf '    export %s=%s\n' "$name" "$(q "${!name}")"
        fi
    done
    echo '    :'
    echo '}'
    printf 'set --'
    for a in "$@"; do printf ' %s' "$(q "$a")"; done
    echo
} >"$xchg/spec" || exit 2
: >"$xchg/stdout"
: >"$xchg/stderr"

# --- Boot. setsid makes the VM the leader of a process group of its own (UML's helper
# processes join it), so a timeout or an interrupt kills the whole of it and nothing else.
# UML keeps its pid file and mconsole socket in uml_dir, and its memory in a file under
# TMPDIR: /dev/shm when possible, which is tmpfs.
umltmp=/dev/shm
[ -d "$umltmp" ] && [ -w "$umltmp" ] || umltmp=$xchg
# lpj= skips the kernel's delay-loop calibration (0.3 s); UML barely uses the delay loop.
bogo=$(awk -F: '/^bogomips/ { printf "%d", $2; exit }' /proc/cpuinfo 2>/dev/null)
lpj=()
[ -n "$bogo" ] && [ "$bogo" -gt 0 ] && lpj=("lpj=$((bogo * 2500))")
# A small empty disk, /dev/ubda in the guest: the only block device there, for io.max tests.
truncate -s 64M "$xchg/disk.img" || cannot_run "cannot create the guest's disk in $xchg"
start=$(date +%s.%N)
# bash reports a background job that a signal ended ("Killed", "Aborted" on a kernel panic) on
# its own stderr: keep that off the caller's, while the VM runs.
exec 4>&2 2>/dev/null
quiet_err=1
TMPDIR=$umltmp setsid "$linux" \
    mem="$mem" \
    root=/dev/root rootfstype=hostfs rootflags=/ ro \
    init="$init" \
    con=null con0=null,fd:1 \
    uml_dir="$xchg" umid=vm \
    cgroup_no_v1=all \
    ubd0="$xchg/disk.img" \
    quiet "${lpj[@]}" \
    UML_XCHG="$xchg" \
    </dev/null >"$xchg/console.log" 2>&1 &
vm_pid=$!

# CMD's output as it comes: the guest writes it through hostfs, which writes through at once.
tail -n +1 -s 0.2 -f --pid="$vm_pid" "$xchg/stdout" &
tails+=($!)
tail -n +1 -s 0.2 -f --pid="$vm_pid" "$xchg/stderr" >&4 &
tails+=($!)

deadline=$(($(date +%s) + timeout))
timed_out=0
while kill -0 "$vm_pid" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        timed_out=1
        kill -KILL -- "-$vm_pid" 2>/dev/null
        break
    fi
    sleep 0.1
done
wait "$vm_pid"
vm_rc=$?
# UML's helper processes (one per guest address space) are in its group: make sure none outlives
# it, and wait until they are gone.
for _ in $(seq 50); do
    kill -KILL -- "-$vm_pid" 2>/dev/null || break
    sleep 0.1
done
for t in "${tails[@]}"; do wait "$t"; done
tails=()
exec 2>&4 4>&-
quiet_err=0
end=$(date +%s.%N)
echo "$start $end" >"$xchg/times"

if [ "$verbose" = 1 ]; then
    echo "--- uml console (vm exit $vm_rc)" >&2
    cat "$xchg/console.log" >&2
    [ -f "$xchg/init.log" ] && { echo "--- uml init.log" >&2; cat "$xchg/init.log" >&2; }
fi
if [ "$timed_out" = 1 ]; then
    echo "uml: timed out after ${timeout}s, VM killed" >&2
    exit 124
fi
if [ ! -f "$xchg/started" ]; then
    # The first telling line of the console, past the stock kernel's harmless complaints.
    noise='^\s*\[<|^\s*$|SELinux|mmapper_init|ubd device|epollctl|^Stack:|^Call Trace|^CPU: |^ [0-9a-f]{8} '
    reason=$(grep -E 'Kernel panic' "$xchg/console.log" | head -n 1)
    [ -n "$reason" ] || reason=$(grep -vE "$noise" "$xchg/console.log" |
        grep -iE 'panic|error|fail|cannot|can.t|denied|not permitted|unable' | head -n 1)
    [ -n "$reason" ] || reason=$(grep -vE "$noise" "$xchg/console.log" | tail -n 1)
    cannot_run "the VM did not reach its init (exit $vm_rc): ${reason:-no output}"
fi
if [ ! -f "$xchg/status" ]; then
    echo "uml: the VM ended (exit $vm_rc) before CMD's exit status was known; its last words:" >&2
    tail -n 15 "$xchg/console.log" >&2
    [ -f "$xchg/init.log" ] && tail -n 5 "$xchg/init.log" >&2
    exit 125
fi
rc=$(cat "$xchg/status")
case "$rc" in '' | *[!0-9]*) echo "uml: bad status '$rc'" >&2; exit 125 ;; esac
exit "$rc"
