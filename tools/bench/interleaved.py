#!/usr/bin/env python3
"""Interleaved wall-time comparison: tools/bench/interleaved.py [--runs N] [--warmup N] [--gap MS] CMD...

Runs each command once per round, round after round (A B C A B C ...), and prints the median and
quartiles of each. hyperfine runs one command's runs in a block, so on a VM whose speed drifts
from minute to minute (this project's does, by 10-30%), two blocks can differ by more than the
commands do; interleaving gives every command the same conditions. Each CMD is one shell-quoted
string, run without a shell; the times include Python's fork and exec of it (the same for all).
A command may leave work to the kernel after it exits (a network namespace is torn down by a
kernel worker, a sandbox's init may still be exiting), which then lands on whatever runs next;
--gap MS sleeps that long after each command so that every one starts on a quiet machine.
"""
import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--gap", type=float, default=0, help="milliseconds to sleep after each command")
    ap.add_argument("--json", help="also write the medians and quartiles here, in the commands' order")
    ap.add_argument("commands", nargs="+")
    args = ap.parse_args()
    if args.runs < 2:
        ap.error("--runs must be at least 2 (quartiles need two runs)")
    cmds = [shlex.split(c) for c in args.commands]
    times = [[] for _ in cmds]
    failures = [0 for _ in cmds]
    for round_ in range(args.warmup + args.runs):
        for i, cmd in enumerate(cmds):
            t = time.perf_counter()
            rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL).returncode
            elapsed = (time.perf_counter() - t) * 1000
            if round_ >= args.warmup:
                times[i].append(elapsed)
                failures[i] += rc != 0
            if args.gap:
                time.sleep(args.gap / 1000)
    gap = f", {args.gap:g} ms apart" if args.gap else ""
    print(f"interleaved, {args.runs} rounds after {args.warmup} warm-up rounds{gap}; wall ms per run")
    print(f"{'median':>8} {'p25':>8} {'p75':>8}  command")
    results = []
    for cmd, t, f in zip(args.commands, times, failures):
        q = statistics.quantiles(t, n=4)
        flag = f"  ({f} runs failed)" if f else ""
        print(f"{statistics.median(t):8.2f} {q[0]:8.2f} {q[2]:8.2f}  {cmd}{flag}")
        results.append({"command": cmd, "median_ms": statistics.median(t), "p25_ms": q[0], "p75_ms": q[2],
                        "failed": f})
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"rounds": args.runs, "gap_ms": args.gap, "results": results}, out, indent=1)
    return 1 if any(failures) else 0


if __name__ == "__main__":
    sys.exit(main())
