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

echo "== unit tests (doctest)"
build/tests/hutch-unit --reporters=console,junit --out="$results/unit.xml" >"$results/unit.log" 2>&1 || status=1
# The console reporter's lines go to the log; the junit file gets only junit when split by reporter.
build/tests/hutch-unit --reporters=junit --out="$results/unit.xml" >/dev/null 2>&1 || status=1
tail -n 4 "$results/unit.log"

echo "== integration tests (pytest)"
HUTCH_BIN="$PWD/build/hutch" HUTCH_DEFAULT_ROOTFS="$PWD/build/rootfs/busybox" HUTCH_POLICY_DIR="$PWD/policies" \
    /usr/bin/python3 -m pytest -q -rs --junitxml="$results/integration.xml" tests/integration || status=1

/usr/bin/python3 tools/junit-summary.py "$results"/*.xml || status=1
exit $status
