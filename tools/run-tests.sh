#!/bin/sh
# Runs every test of hutch: doctest units, then the integration suite (pytest, driving the real
# binary as root and as unprivileged users it creates), and prints one closing line
# "N passed, N failed, N skipped" counted from the runners' JUnit reports.
set -u
cd "$(dirname "$0")/.."
results=build/test-results
rm -rf "$results"
mkdir -p "$results"
status=0

# doctest writes one reporter per output, so each unit binary runs twice: once for the console
# (its summary is shown) and once for the JUnit report that is counted.
for unit in hutch-unit hutch-unit-image; do
    echo "== unit tests ($unit)"
    build/tests/$unit >"$results/$unit.log" 2>&1 || { status=1; cat "$results/$unit.log"; }
    tail -n 3 "$results/$unit.log"
    build/tests/$unit --reporters=junit --out="$results/$unit.xml" >/dev/null 2>&1 || status=1
done

echo "== integration tests (pytest)"
HUTCH_BIN="$PWD/build/hutch" HUTCH_DEFAULT_ROOTFS="$PWD/build/rootfs/busybox" HUTCH_POLICY_DIR="$PWD/policies" \
    /usr/bin/python3 -m pytest -q -rs --junitxml="$results/integration.xml" tests/integration || status=1

/usr/bin/python3 tools/junit-summary.py "$results"/*.xml || status=1
exit $status
