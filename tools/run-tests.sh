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

# The unit tests of removing what a sandbox leaves, again as the unprivileged user the integration
# tests created: without root's permission overrides, a mode-0 directory is only its owner's to
# open up again.
if [ "$(id -u)" -eq 0 ] && id hutch-t-sub >/dev/null 2>&1; then
    echo "== unit tests as hutch-t-sub (removing sandbox leftovers)"
    out=$(mktemp -d /tmp/hutch-unit-user.XXXXXX)
    chown hutch-t-sub "$out"
    cases='remove_tree*,*volatile mount*,a sweep*'
    setpriv --reuid=hutch-t-sub --regid=hutch-t-sub --init-groups build/tests/hutch-unit -tc="$cases" >"$out/log" 2>&1 ||
        { status=1; cat "$out/log"; }
    tail -n 3 "$out/log"
    setpriv --reuid=hutch-t-sub --regid=hutch-t-sub --init-groups build/tests/hutch-unit -tc="$cases" \
        --reporters=junit --out="$out/unit-user.xml" >/dev/null 2>&1 || status=1
    cp "$out/unit-user.xml" "$results/hutch-unit-as-user.xml" 2>/dev/null || status=1
    rm -rf "$out"
else
    echo "== unit tests as hutch-t-sub: skipped (needs root and the user the integration tests create)"
fi

echo "== cgroup v2 tests inside User-Mode Linux (tools/uml)"
# The VM sees the host's files read-only; everything it needs is staged where any user can read it,
# and the reports come back through a directory shared read-write.
stage=$(mktemp -d /tmp/hutch-vm-stage.XXXXXX)
chmod 755 "$stage"
cp build/hutch build/hutch-image "$stage/"
cp -a build/rootfs policies tests/vm "$stage/"
mkdir -m 777 "$stage/results"
for who in root hutch-t-sub; do
    user_flag=""
    [ "$who" = root ] || user_flag="--user $who"
    # shellcheck disable=SC2086
    tools/uml/run.sh $user_flag --rw "$stage" --timeout 1200 -- \
        env HUTCH_BIN="$stage/hutch" HUTCH_IMAGE_HELPER="$stage/hutch-image" \
            HUTCH_DEFAULT_ROOTFS="$stage/rootfs/busybox" HUTCH_DEFAULT_IMAGE_LAYOUT="$stage/rootfs/busybox-oci" \
            HUTCH_POLICY_DIR="$stage/policies" \
        /usr/bin/python3 -m pytest -q -p no:cacheprovider -rs "$stage/vm" --junitxml="$stage/results/vm-$who.xml"
    rc=$?
    if [ $rc -eq 77 ]; then
        echo "SKIPPED: cgroup v2 tests as $who: User-Mode Linux cannot run here (see the line above)"
        printf '<testsuite><testcase classname="vm" name="cgroup-v2-as-%s"><skipped message="User-Mode Linux cannot run here"/></testcase></testsuite>\n' "$who" > "$results/vm-$who.xml"
    else
        [ $rc -eq 0 ] || status=1
        cp "$stage/results/vm-$who.xml" "$results/" 2>/dev/null || status=1
    fi
done
rm -rf "$stage"

/usr/bin/python3 tools/junit-summary.py "$results"/*.xml || status=1
exit $status
