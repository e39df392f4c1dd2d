#!/usr/bin/env python3
"""Wall time of claude-max-market commands, for BENCHMARKS.md.

Usage: bench/wall_time.py BINARY [RUNS]

Makes a temporary data folder, warms its compile cache with one `status`,
then times `status` and `execute --dry-run` RUNS times each (default 30)
and prints p50/p90/max in milliseconds. Also times one `status` on an empty
cache, which compiles the four default plugins.
"""

import subprocess
import sys
import tempfile
import time


def timed(cmd):
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False)
    return (time.perf_counter() - start) * 1000


def report(name, samples):
    samples.sort()
    n = len(samples)
    p50, p90 = samples[n // 2], samples[min(n - 1, (n * 9) // 10)]
    print(f"{name}: p50 {p50:.1f} ms, p90 {p90:.1f} ms, max {samples[-1]:.1f} ms (n={n})")


def main():
    binary = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    with tempfile.TemporaryDirectory() as cold, tempfile.TemporaryDirectory() as home:
        print(f"status, empty compile cache: {timed([binary, '--home', cold, 'status']):.0f} ms")
        timed([binary, "--home", home, "status"])
        report("status, warm cache", [timed([binary, "--home", home, "status"]) for _ in range(runs)])
        dry = [binary, "--home", home, "execute", "--dry-run", "--prompt", "hi"]
        report("execute --dry-run, warm cache", [timed(dry) for _ in range(runs)])


if __name__ == "__main__":
    main()
