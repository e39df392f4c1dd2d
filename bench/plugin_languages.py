#!/usr/bin/env python3
"""A Rust, a Python and a C approval plugin side by side, on one binary.

For each plugin: its size, the first load (compile into an empty cache,
wall time and peak memory of the whole `policy test`), the same command
once the cache is warm, `policy bench` (fresh instance and warm, p50/p99),
and the least `policy.fuel` its cases pass with (bisected; fuel is
deterministic, so this is exact).

usage: bench/plugin_languages.py BINARY RUST_APPROVAL.wasm PYTHON_APPROVAL.wasm [C_APPROVAL.wasm]

The Rust plugin is the default approval plugin (built into
target/release/build/*/out/plugins-target/wasm32-wasip2/release/approval.wasm
by a release build); the Python one is examples/python-approval built with
componentize-py as its README says, and the C one examples/c-approval
built as its README says. Each is run against its own cases.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    "rust": os.path.join(REPO, "host/src/ops/scaffold/approval/cases.toml"),
    "python": os.path.join(REPO, "examples/python-approval/cases.toml"),
    "c": os.path.join(REPO, "examples/c-approval/cases.toml"),
}
DEFAULT_CASES = """[[case]]
name = "a small local job"
[case.job]
tokens = 5000
[case.expect]
decision = "{decision}"
"""


def run(binary, home, *args, check=True):
    started = time.monotonic()
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%M", binary, "--home", home, *args],
        capture_output=True,
        text=True,
    )
    elapsed = time.monotonic() - started
    if check and proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    rss_kb = int(proc.stderr.strip().splitlines()[-1])
    return proc, elapsed, rss_kb


def cases_for(kind, directory):
    """The plugin's own cases, except that the Rust default plugin's
    scaffold cases speak of plugin.models, which it does not read; it gets
    one case of its own instead."""
    if kind != "rust":
        return CASES[kind]
    path = os.path.join(directory, "cases.toml")
    with open(path, "w") as f:
        f.write(DEFAULT_CASES.format(decision="ask"))
    return path


def least_fuel(binary, wasm, cases):
    home = tempfile.mkdtemp()
    run(binary, home, "policy", "test", wasm, "--cases", cases)
    low, high = 10_000, 10_000_000_000
    while high - low > 1:
        mid = (low + high) // 2
        run(binary, home, "config", "--set", f"policy.fuel={mid}")
        proc, _, _ = run(binary, home, "policy", "test", wasm, "--cases", cases, check=False)
        if proc.returncode == 0:
            high = mid
        else:
            low = mid
    return high


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    binary = sys.argv[1]
    rows = []
    for kind, wasm in zip(("rust", "python", "c"), sys.argv[2:]):
        work = tempfile.mkdtemp()
        cases = cases_for(kind, work)
        home = tempfile.mkdtemp()
        _, cold, cold_rss = run(binary, home, "policy", "test", wasm, "--cases", cases)
        warm_runs = [run(binary, home, "policy", "test", wasm, "--cases", cases)[1] for _ in range(5)]
        proc, _, _ = run(binary, home, "--json", "policy", "bench", wasm, "--iterations", "1000")
        bench = json.loads(proc.stdout)[0]
        rows.append(
            {
                "plugin": kind,
                "bytes": os.path.getsize(wasm),
                "first_load_s": round(cold, 2),
                "first_load_peak_rss_mib": round(cold_rss / 1024, 1),
                "warm_cache_test_s": round(sorted(warm_runs)[2], 3),
                "fresh_p50_us": round(bench["fresh_p50_us"], 1),
                "fresh_p99_us": round(bench["fresh_p99_us"], 1),
                "warm_p50_us": round(bench["warm_p50_us"], 1),
                "warm_p99_us": round(bench["warm_p99_us"], 1),
                "least_fuel": least_fuel(binary, wasm, cases),
            }
        )
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
