#!/usr/bin/env python3
"""Prints 'N passed, N failed, N skipped' over JUnit XML reports; exits 1 if a report is missing
or holds no test at all, so a run that executed nothing is visible."""
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
ok = True
for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"junit-summary: cannot read {path}: {e}", file=sys.stderr)
        ok = False
        continue
    cases = root.iter("testcase")
    n = 0
    for case in cases:
        n += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    if n == 0:
        print(f"junit-summary: {path} holds no test", file=sys.stderr)
        ok = False
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(0 if ok and failed == 0 else 1)
