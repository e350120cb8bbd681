#!/bin/sh
# Start-up cost of cgroup limits: `hutch run --memory 256m --pids-limit 256 true` against the same
# run without limits, measured inside User-Mode Linux (a pure cgroup v2 kernel, tools/uml), since
# the development host's cgroups are a v1/v2 hybrid: wall times with hyperfine, then hutch's own
# time and its cgroup steps from HUTCH_TRACE (tools/bench/trace_summary.py), which the VM's slow
# process start-up and exit do not blur. Usage: tools/bench/limits.sh [RUNS]
set -eu
cd "$(dirname "$0")/../.."
runs=${1:-50}
stage=$(mktemp -d /tmp/hutch-bench-limits.XXXXXX)
trap 'rm -rf "$stage"' EXIT
chmod 755 "$stage"
cp build/hutch build/hutch-image "$stage/"
cp -a build/rootfs/busybox-oci policies "$stage/"
cat > "$stage/inside.sh" <<INSIDE
set -e
export HUTCH_IMAGE_HELPER=$stage/hutch-image HUTCH_DEFAULT_IMAGE_LAYOUT=$stage/busybox-oci HUTCH_POLICY_DIR=$stage/policies
root=\$(mktemp -d /tmp/hutch-root.XXXXXX)
h="$stage/hutch --root \$root"
\$h run busybox true
hyperfine -N --warmup 5 --runs $runs --export-markdown $stage/limits.md \
    "\$h run busybox true" "\$h run --memory 256m --pids-limit 256 busybox true"
# The same runs traced (HUTCH_TRACE), alternating, for hutch's own time without the VM's noise
# of starting and ending processes.
mkdir -p $stage/traces
i=0
while [ \$i -lt $runs ]; do
    i=\$((i + 1))
    HUTCH_TRACE=1 \$h run busybox true 2>$stage/traces/plain-\$i.trace
    HUTCH_TRACE=1 \$h run --memory 256m --pids-limit 256 busybox true 2>$stage/traces/limits-\$i.trace
done
# How many system calls each makes, all processes counted (strace -c): the cost of limits that
# no noise blurs. In UML a system call costs tens of microseconds.
if command -v strace >/dev/null; then
    for kind in plain limits; do
        opts=""
        [ \$kind = limits ] && opts="--memory 256m --pids-limit 256"
        strace -f -c -o $stage/\$kind.strace \$h run \$opts busybox true
    done
fi
INSIDE
tools/uml/run.sh --rw "$stage" --timeout 1800 -- sh "$stage/inside.sh"
cat "$stage/limits.md"
echo
python3 tools/bench/trace_summary.py "$stage/traces" plain limits
calls() { awk '$NF == "total" { print $4 }' "$stage/$1.strace"; }
if [ -s "$stage/plain.strace" ] && [ -s "$stage/limits.strace" ]; then
    echo "system calls of one run (strace -f -c): plain $(calls plain), limits $(calls limits)"
else
    echo "system calls not counted: strace is not installed"
fi
