#!/usr/bin/env python3
"""Medians of HUTCH_TRACE spans over many runs: tools/bench/trace_summary.py DIR LABEL...

DIR holds one file per run, named LABEL-N.trace (the stderr of `HUTCH_TRACE=1 hutch ...`). For each
label it prints the median time from the first trace line to the last one (hutch's own work,
without process start-up and exit), and the median of each span between two named trace points
that appear in every run of that label. With two labels whose runs alternated (A-1, B-1, A-2, B-2,
...), it also prints the median and quartiles of the paired differences B-N minus A-N, which the
drift of a VM's speed over minutes affects far less than a difference of two medians."""
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
    own: dict[str, dict[int, float]] = {}
    for label in sys.argv[2:]:
        numbered = {int(p.stem.rsplit("-", 1)[1]): load(p) for p in d.glob(f"{label}-*.trace")}
        numbered = {n: r for n, r in numbered.items() if r}
        own[label] = {n: (r[-1][0] - r[0][0]) * 1000 for n, r in numbered.items()}
        runs = [numbered[n] for n in sorted(numbered)]
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
    if len(own) == 2:
        a, b = own
        diffs = sorted(own[b][n] - own[a][n] for n in own[a].keys() & own[b].keys())
        if len(diffs) >= 4:
            q = statistics.quantiles(diffs, n=4)
            print(f"paired, {b} minus {a}: median {statistics.median(diffs):+.2f} ms "
                  f"(quartiles {q[0]:+.2f} .. {q[2]:+.2f}) over {len(diffs)} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
