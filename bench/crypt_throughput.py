#!/usr/bin/env python3
"""Throughput and peak memory of `encrypt` and `decrypt`, for BENCHMARKS.md.

Usage: bench/crypt_throughput.py BINARY [MIB]

Writes MIB (default 1024) MiB of random bytes to a temporary folder, then
runs `encrypt` and `decrypt` on it once each with a fresh data folder (its
node key is made first, outside the timing), checks the round trip, and
prints MB/s (10^6 bytes per second of plaintext) and the peak resident
memory of each process, read from the kernel's rusage of the child.
"""

import filecmp
import os
import resource
import subprocess
import sys
import tempfile
import time


def run_measured(cmd):
    """Wall seconds and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.execvp(cmd[0], cmd)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed")
    return elapsed, usage.ru_maxrss / 1024


def main():
    binary = sys.argv[1]
    mib = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    size = mib << 20
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as work:
        home = os.path.join(work, "home")
        plain = os.path.join(work, "plain.bin")
        sealed = os.path.join(work, "plain.bin.cmmenc")
        opened = os.path.join(work, "opened.bin")
        with open(plain, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(mib):
                f.write(chunk)
        subprocess.run([binary, "--home", home, "keys", "show"], check=True,
                       stdout=subprocess.DEVNULL)
        enc_s, enc_rss = run_measured(
            [binary, "--home", home, "encrypt", "--input", plain, "--output", sealed])
        dec_s, dec_rss = run_measured(
            [binary, "--home", home, "decrypt", "--input", sealed, "--output", opened])
        if not filecmp.cmp(plain, opened, shallow=False):
            sys.exit("the round trip changed the data")
        overhead = os.path.getsize(sealed) - size
    print(f"{mib} MiB, ciphertext overhead {overhead} bytes")
    print(f"encrypt: {size / enc_s / 1e6:.0f} MB/s ({enc_s:.2f} s), peak RSS {enc_rss:.1f} MiB")
    print(f"decrypt: {size / dec_s / 1e6:.0f} MB/s ({dec_s:.2f} s), peak RSS {dec_rss:.1f} MiB")


if __name__ == "__main__":
    main()
