#!/usr/bin/env python3
"""Medians of HUTCH_TRACE spans over many runs: tools/bench/trace_summary.py DIR LABEL...

DIR holds one file per run, named LABEL-N.trace (the stderr of `HUTCH_TRACE=1 hutch ...`). For each
label it prints the median time from the first trace line to the last one (hutch's own work,
without process start-up and exit), and the median of each span between two named trace points
that appear in every run of that label."""
import statistics
import sys
from pathlib import Path

SPANS = [
    ("cgroup made", "front end: making the cgroup", "front end: cgroup made"),
    ("cgroup finished and removed", "front end: cgroup finishing", "front end: cgroup removed"),
]


def load(path: Path) -> list[tuple[float, str]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("[") or "] " not in line:
            continue
        stamp, rest = line[1:].split("]", 1)
        out.append((float(stamp.split()[0]), rest.strip()))
    return out


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    d = Path(sys.argv[1])
    for label in sys.argv[2:]:
        runs = [load(p) for p in sorted(d.glob(f"{label}-*.trace"))]
        runs = [r for r in runs if r]
        if not runs:
            print(f"{label}: no traces")
            continue
        total = [(r[-1][0] - r[0][0]) * 1000 for r in runs]
        print(f"{label}: {len(runs)} runs, hutch's own time (first to last trace point) "
              f"median {statistics.median(total):.2f} ms, min {min(total):.2f} ms")
        for name, a, b in SPANS:
            spans = []
            for r in runs:
                ta = next((t for t, w in r if w == a), None)
                tb = next((t for t, w in r if w == b), None)
                if ta is not None and tb is not None:
                    spans.append((tb - ta) * 1000)
            if len(spans) == len(runs):
                print(f"  {name}: median {statistics.median(spans):.2f} ms, min {min(spans):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
