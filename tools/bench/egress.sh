#!/bin/sh
# Egress benchmark (issue 5): what --network egress costs.
#   1. start-up: `hutch run --network egress` with a 20-domain policy over `--network none`
#      (both run `true`; the difference is pasta, the ruleset, the DNS forwarder and the wait
#      for pasta's routes);
#   2. time to first byte to an allowed host: the same sandbox running
#      `wget -O- http://d7.test/` (DNS through hutch's forwarder, nft set update, TCP, HTTP).
# Everything runs inside a fake internet of network namespaces (tests/integration/netlab.py):
# never the host's own network. Root only (it creates the namespaces).
#
#   sudo tools/bench/egress.sh [--runs N] [--out DIR] [--hutch BIN]
set -eu
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-50}
OUT=/tmp/hutch-bench-egress
HUTCH=$PWD/build/hutch
while [ $# -gt 0 ]; do
    case $1 in
        --runs) RUNS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --hutch) HUTCH=$2; shift 2 ;;
        *) echo "usage: $0 [--runs N] [--out DIR] [--hutch BIN]" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" -ne 0 ]; then echo "$0: needs root (it creates network namespaces)" >&2; exit 1; fi
for tool in hyperfine pasta dnsmasq ip; do
    command -v $tool >/dev/null 2>&1 || { echo "$0: $tool is not installed" >&2; exit 1; }
done

mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/hutch-egress-bench.XXXXXX)
chmod 755 "$WORK"  # root's sandboxes run as an unprivileged uid range that must reach the store
LAB=hxb$$
cleanup() {
    python3 tests/integration/netlab.py down "$LAB" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

OUTER=$(python3 tests/integration/netlab.py up "$LAB")
cp "$HUTCH" "$WORK/hutch"
POLICY=$WORK/twenty.toml
{
    echo '[network]'
    echo 'mode = "egress"'
    echo 'allow = ['
    i=0
    while [ $i -lt 20 ]; do echo "  { host = \"d$i.test\", ports = [80, 443] },"; i=$((i + 1)); done
    echo ']'
} >"$POLICY"
H="$WORK/hutch --root $WORK/root"
run() { ip netns exec "$OUTER" "$@"; }

# Pre-flight: each command once, and it must work (the sandbox's root and store are created here).
run $H run --network none -- true
run $H run --policy "$POLICY" -- true
run $H run --policy "$POLICY" -- wget -q -O- http://d7.test/ | grep -q 'hello from h2'

run hyperfine -N --warmup 5 --runs "$RUNS" --export-json "$OUT/egress.json" --export-markdown "$OUT/egress.md" \
    -n "run --network none" "$H run --network none -- true" \
    -n "run --network egress (20 domains)" "$H run --policy $POLICY -- true" \
    -n "egress: first byte from d7.test" "$H run --policy $POLICY -- wget -q -O /dev/null http://d7.test/"

python3 - "$OUT/egress.json" <<'EOF' | tee "$OUT/summary.txt"
import json, statistics, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
med = {k: statistics.median(v["times"]) * 1000 for k, v in res.items()}
none, egress = med["run --network none"], med["run --network egress (20 domains)"]
first = med["egress: first byte from d7.test"]
print(f"median run --network none:              {none:7.1f} ms")
print(f"median run --network egress (20 names): {egress:7.1f} ms")
print(f"extra start-up of egress:               {egress - none:7.1f} ms (target <= 15 ms)")
print(f"median run + first byte from d7.test:   {first:7.1f} ms")
print(f"time to first byte (over egress true):  {first - egress:7.1f} ms")
EOF
echo "kernel $(uname -r), $(nproc) CPUs, $(pasta --version 2>&1 | head -1), results in $OUT"
