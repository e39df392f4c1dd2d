#!/usr/bin/env python3
"""Workspace transfer through the market, for BENCHMARKS.md.

Usage: bench/market_workspace.py TARGET_DIR [MIB] [ROUNDS]

TARGET_DIR holds release builds of `claude-max-market` and `mock-anthropic`
(`cargo build --release -p claude-max-market -p mock-anthropic`);
`nats-server` (with JetStream) must be on PATH. The job runs in the image of
this machine's shell and tools that the CLI tests build (`cargo test --test
cli market_tasks` leaves `cmm-test-tools:*` in the Docker Engine).

The same command job on a workspace of MIB MiB (default 100) of
incompressible data, ROUNDS times each (default 3), alternating which side
goes first:

- local: `execute --image TOOLS --workspace DIR -- sh -c ...` on the
  provider's own home: the folder copied in, the container, the changed
  workspace back and compared.
- market: the same from a requester to one provider (`serve`) on a NATS
  server on loopback: the copy packed, sealed to the provider, stored in the
  object store, fetched, opened and unpacked, the job, and the whole
  workspace back the same way to the requester, compared, then settled.

Prints the wall time of each, the workspace's MiB per second through each
(the workspace travels both ways, so the market moves twice MIB), and the
time the market adds.
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from market_throughput import KEY, Node, start_market, stop_all

SCRIPT = "echo changed >> notes.txt && wc -c < big.bin"


def tools_image():
    out = subprocess.run(
        ["docker", "images", "cmm-test-tools", "--format", "{{.Repository}}:{{.Tag}}"],
        stdout=subprocess.PIPE, check=True).stdout.decode().split()
    if not out:
        sys.exit("no cmm-test-tools image: run `cargo test --test cli market_tasks` first")
    return out[0]


def timed(command):
    start = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    took = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command[3:6])} failed ({result.returncode}): "
                 f"{result.stdout.decode()[-2000:]}{result.stderr.decode()[-2000:]}")
    return took


def main():
    target = sys.argv[1]
    mib = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    cmm = os.path.join(target, "claude-max-market")
    mock = os.path.join(target, "mock-anthropic")
    if shutil.which("nats-server") is None:
        sys.exit("nats-server is not on PATH (apt-get install nats-server)")
    image = tools_image()
    repository = image.rsplit(":", 1)[0]
    root = tempfile.mkdtemp(prefix="cmm-workspace-bench-")
    procs = []
    try:
        workspace = os.path.join(root, "workspace")
        os.makedirs(workspace)
        with open(os.path.join(workspace, "big.bin"), "wb") as f:
            f.write(os.urandom(mib << 20))
        with open(os.path.join(workspace, "notes.txt"), "w") as f:
            f.write("one\n")

        port, api = start_market(mock, root, procs)

        limits = ["compliance.allowAutoApprove=true", "workspace.maxBytes=1g",
                  "docker.memory=2g", "limits.timeoutSecs=600"]
        requester = Node(cmm, root, "requester")
        requester.run("opt-in", "--accept-terms", "--claude-jobs")
        issuer = requester.json("keys", "show")["current"]["node_id"]
        market = [f"market.url=nats://127.0.0.1:{port}", f"market.issuerKeys={issuer}",
                  "market.taskTimeoutSecs=600"]
        requester.set(*limits, *market)
        requester.run("market", "grant", "--to", issuer, "--amount", "1000000")

        provider = Node(cmm, root, "provider")
        os.environ["ANTHROPIC_API_KEY"] = KEY
        provider.run("opt-in", "--accept-terms", "--claude-jobs")
        # serve needs its job image; this one runs commands only.
        provider.set(f"api.baseUrl={api}", f"compliance.allowedImages={repository}",
                     f"docker.image={image}",
                     *limits, *market)
        log = open(os.path.join(root, "serve.log"), "wb")
        procs.append(subprocess.Popen(
            [cmm, "--home", provider.home, "serve", "--approve-all", "--price", "1"],
            stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while not requester.json("market", "offers"):
            if time.monotonic() > deadline:
                sys.exit("the provider's offer did not appear within 60 s")
            time.sleep(0.2)

        job = ["--approve-all", "--image", image, "--workspace", workspace,
               "--", "sh", "-c", SCRIPT]
        local = [cmm, "--home", provider.home, "execute", *job]
        on_market = [cmm, "--home", requester.home, "execute", "--market", *job]
        timed(local)
        timed(on_market)
        local_s, market_s = [], []
        for i in range(rounds):
            sides = [(local, local_s), (on_market, market_s)]
            for command, times in sides if i % 2 == 0 else reversed(sides):
                times.append(timed(command))
    finally:
        stop_all(procs)
        if os.environ.get("CMM_BENCH_KEEP"):
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    m_local, m_market = statistics.median(local_s), statistics.median(market_s)
    runs = ", ".join(f"{t:.2f}" for t in local_s)
    print(f"local:  median {m_local:.2f} s ({runs}) for a {mib} MiB workspace: "
          f"{mib / m_local:.0f} MiB/s in and back")
    runs = ", ".join(f"{t:.2f}" for t in market_s)
    print(f"market: median {m_market:.2f} s ({runs}): {mib / m_market:.0f} MiB/s in and back")
    print(f"the market adds {m_market - m_local:.2f} s: "
          f"{2 * mib / max(m_market - m_local, 1e-9):.0f} MiB/s for the {2 * mib} MiB "
          f"it carries both ways; ratio market / local {m_market / m_local:.2f}")


if __name__ == "__main__":
    main()
