#!/bin/bash
# Self-check of tools/uml/run.sh: boots User-Mode Linux a dozen times and checks what the harness
# promises (exit status, output, timeout, cgroup v2 as root and as a delegated user, user and
# overlay mounts in a user namespace), measures the boot-to-exit time of `true`, and reports what
# the guest kernel offers hutch. Closes with "N passed, N failed, N skipped".
#
#   tools/uml/selftest.sh [USER]     USER: the unprivileged user (default hutch-t-sub; it must
#                                    exist on the host: tools/test-users.sh creates it)
# Exit status: 0 when every check passed, 1 when one failed, 77 when UML cannot run here.
set -u
case "${BASH_SOURCE[0]}" in */*) here=${BASH_SOURCE[0]%/*} ;; *) here=. ;; esac
here=$(cd "$here" && pwd -P)
run=$here/run.sh
user=${1:-hutch-t-sub}

pass=0
failed=0
skipped=0
ok() { echo "ok    $*"; pass=$((pass + 1)); }
bad() { echo "FAIL  $*"; failed=$((failed + 1)); }
skip() { echo "skip  $*"; skipped=$((skipped + 1)); }
info() { echo "info  $*"; }
summary() { echo "$pass passed, $failed failed, $skipped skipped"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/uml-selftest.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# r NAME [run.sh options] -- CMD...: runs, leaves $tmp/NAME.out, $tmp/NAME.err, and $rc.
r() {
    local name=$1
    shift
    "$run" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
    rc=$?
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
show() { sed 's/^/      | /' "$@" | head -n 20; }

# --- Can it run at all? (also the first boot-to-exit sample)
t0=$(now)
r probe -- true
t1=$(now)
if [ "$rc" = 77 ]; then
    echo "skip  UML cannot run here: $(head -n 1 "$tmp/probe.err")"
    skipped=1
    summary
    exit 77
fi
if [ "$rc" = 0 ]; then ok "run.sh -- true exits 0"; else bad "run.sh -- true exits $rc"; show "$tmp/probe.err"; fi
times=("$(elapsed "$t0" "$t1")")

# --- As root.
r ctrl -- cat /sys/fs/cgroup/cgroup.controllers
ctrls=$(cat "$tmp/ctrl.out")
if [ "$rc" = 0 ] && grep -qw memory "$tmp/ctrl.out" && grep -qw pids "$tmp/ctrl.out"; then
    ok "root: /sys/fs/cgroup/cgroup.controllers has memory and pids ($ctrls)"
else
    bad "root: cgroup.controllers is '$ctrls' (exit $rc)"
    show "$tmp/ctrl.err"
fi

r exit3 -- sh -c 'exit 3'
if [ "$rc" = 3 ]; then ok "exit 3 gives 3"; else bad "exit 3 gives $rc"; show "$tmp/exit3.err"; fi

r streams -- sh -c 'echo to-stdout; echo to-stderr >&2; kill -TERM $$'
if [ "$rc" = 143 ] && [ "$(cat "$tmp/streams.out")" = to-stdout ] && [ "$(cat "$tmp/streams.err")" = to-stderr ]; then
    ok "stdout and stderr come back apart; death by SIGTERM gives 143"
else
    bad "streams: exit $rc, stdout '$(cat "$tmp/streams.out")', stderr '$(cat "$tmp/streams.err")'"
fi

cwd=$PWD
special="a b 'c' \"d\" \$e"
want=$(printf '%s\n%s\n%s\n%s' "$cwd" "$special" given unset)
# (HUTCH_* passes; other variables only with --env)
HUTCH_SELFTEST=$special NOT_PASSED=1 r envcwd --env UML_SELFTEST_EXTRA=given -- \
    sh -c 'pwd; printf "%s\n" "$HUTCH_SELFTEST"; echo "$UML_SELFTEST_EXTRA"; echo "${NOT_PASSED:-unset}"'
if [ "$rc" = 0 ] && [ "$(cat "$tmp/envcwd.out")" = "$want" ]; then
    ok "current directory, HUTCH_* and --env variables carry over, others do not"
else
    bad "environment/cwd: exit $rc, got:"
    show "$tmp/envcwd.out" "$tmp/envcwd.err"
fi

t0=$(now)
r timeout --keep --timeout 3 -- sleep 60
t1=$(now)
xchg=$(sed -n 's/^uml: kept //p' "$tmp/timeout.err")
left=""
if [ -n "$xchg" ]; then
    # Any process still naming the exchange directory on its command line (the VM's own) would be
    # a leftover of the killed group.
    left=$(ps -eo pid=,args= | grep -F -- "$xchg" | grep -v grep)
    rm -rf "$xchg"
fi
took=$(elapsed "$t0" "$t1")
if [ "$rc" = 124 ] && [ -z "$left" ] && awk -v t="$took" 'BEGIN { exit !(t < 20) }'; then
    ok "--timeout 3 on sleep 60 gives 124 after ${took}s, no VM process left"
else
    bad "--timeout: exit $rc after ${took}s; left: ${left:-none}"
fi

nolinux=$(PATH=/nonexistent /bin/bash "$run" -- true 2>&1)
nrc=$?
if [ "$nrc" = 77 ] && [ "${nolinux#uml: cannot run: }" != "$nolinux" ]; then
    ok "without a 'linux' binary: exit 77, '$nolinux'"
else
    bad "without a 'linux' binary: exit $nrc, '$nolinux'"
fi

# --- As the unprivileged user, in its delegated subtree.
if ! id -u "$user" >/dev/null 2>&1; then
    for t in "cgroup leaf" "child cgroup" "unshare -Urm" "overlay in a user namespace"; do
        skip "$t as $user: no such user on the host (tools/test-users.sh creates it)"
    done
else
    uid=$(id -u "$user")
    leaf="0::/user.slice/user-$uid.slice/user@$uid.service/app.slice/uml-run.scope"
    r ucg --user "$user" -- sh -c 'id -u; cat /proc/self/cgroup'
    if [ "$rc" = 0 ] && [ "$(sed -n 1p "$tmp/ucg.out")" = "$uid" ] && [ "$(sed -n 2p "$tmp/ucg.out")" = "$leaf" ]; then
        ok "$user: runs as uid $uid, /proc/self/cgroup is $leaf"
    else
        bad "$user: exit $rc, got:"
        show "$tmp/ucg.out" "$tmp/ucg.err"
    fi

    # A child of app.slice: memory.max and pids.max there, and the user's shell moves into it
    # (the common ancestor's cgroup.procs is the user's).
    r uchild --user "$user" -- sh -c '
        d=/sys/fs/cgroup$UML_CGROUP_DELEGATE/app.slice/selftest
        mkdir "$d" && echo 64M >"$d/memory.max" && echo 20 >"$d/pids.max" &&
        cat "$d/memory.max" "$d/pids.max" && echo $$ >"$d/cgroup.procs" && cat /proc/self/cgroup'
    want=$(printf '67108864\n20\n0::/user.slice/user-%s.slice/user@%s.service/app.slice/selftest' "$uid" "$uid")
    if [ "$rc" = 0 ] && [ "$(cat "$tmp/uchild.out")" = "$want" ]; then
        ok "$user: mkdir app.slice/selftest, memory.max=64M, pids.max=20, and moves itself there"
    else
        bad "$user: child cgroup: exit $rc, got:"
        show "$tmp/uchild.out" "$tmp/uchild.err"
    fi

    r userns --user "$user" -- unshare -Urm true
    if [ "$rc" = 0 ]; then ok "$user: unshare -Urm true"; else bad "$user: unshare -Urm true: exit $rc"; show "$tmp/userns.err"; fi

    r ovl --user "$user" -- unshare -Urm sh -c 'mkdir -p /tmp/o/l /tmp/o/u /tmp/o/w /tmp/o/m && echo x >/tmp/o/l/f &&
        mount -t overlay o -o lowerdir=/tmp/o/l,upperdir=/tmp/o/u,workdir=/tmp/o/w,userxattr /tmp/o/m &&
        echo y >>/tmp/o/m/f && cat /tmp/o/m/f && cat /tmp/o/l/f'
    if [ "$rc" = 0 ] && [ "$(cat "$tmp/ovl.out")" = "$(printf 'x\ny\nx')" ]; then
        ok "$user: overlay mount (userxattr) in a user namespace, copy-up works"
    else
        bad "$user: overlay in a user namespace: exit $rc"
        show "$tmp/ovl.out" "$tmp/ovl.err"
    fi
fi

# --- Boot-to-exit time of `true` (wall clock of run.sh, VM boot and power-off included).
for _ in 1 2; do
    t0=$(now)
    r time -- true
    t1=$(now)
    times+=("$(elapsed "$t0" "$t1")")
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n | tr '\n' ' ')
info "boot-to-exit of 'run.sh -- true', seconds: $sorted(load average: $(cut -d' ' -f1-3 /proc/loadavg))"

# --- What the guest kernel offers hutch (informational).
r caps -- sh -c '
    cg=/sys/fs/cgroup; mkdir $cg/probe
    echo "kernel $(uname -r), $(nproc) cpu(s), $(grep MemTotal /proc/meminfo | tr -s " ")"
    echo "cgroup2 controllers: $(cat $cg/cgroup.controllers)"
    for f in cpu.max cpu.weight cpuset.cpus io.max io.weight memory.max memory.swap.max memory.peak memory.pressure pids.max pids.peak; do
        [ -e $cg/probe/$f ] && have="$have $f" || miss="$miss $f"
    done
    echo "cgroup files present:$have; absent:$miss"
    echo "namespaces: $(ls /proc/self/ns | tr "\n" " ")"
    echo "user.max_user_namespaces=$(cat /proc/sys/user/max_user_namespaces) kernel.unprivileged_userns_clone=$(cat /proc/sys/kernel/unprivileged_userns_clone 2>/dev/null || echo n/a)"
    echo "seccomp actions: $(cat /proc/sys/kernel/seccomp/actions_avail)"
    for m in overlay nf_tables veth configs; do busybox modprobe $m 2>/dev/null && mods="$mods $m" || nomods="$nomods $m"; done
    echo "modules loaded on demand:$mods; not loadable:${nomods:- none}"
    if [ -e /proc/config.gz ]; then
        echo "config: $(zcat /proc/config.gz | grep -E "^CONFIG_(NF_TABLES|NF_TABLES_[A-Z0-9]+|IP_NF_IPTABLES|OVERLAY_FS|SECCOMP_FILTER|USER_NS|BLK_DEV_THROTTLING|SMP|CPUSETS)=" | tr "\n" " ")"
        echo "not set: $(zcat /proc/config.gz | sed -n "s/^# CONFIG_\(NF_TABLES_INET\|NF_TABLES_IPV4\|NF_TABLES_IPV6\|NF_TABLES_NETDEV\|BLK_CGROUP_IOCOST\|BFQ_GROUP_IOSCHED\|PSI\|TIME_NS\) is not set/\1/p" | tr "\n" " ")"
    fi'
if [ "$rc" = 0 ]; then
    while IFS= read -r line; do info "$line"; done <"$tmp/caps.out"
else
    info "capability probe failed (exit $rc)"
    show "$tmp/caps.err"
fi

summary
[ "$failed" = 0 ]
