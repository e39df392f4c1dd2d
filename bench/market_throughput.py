#!/usr/bin/env python3
"""Market throughput: tasks matched per second, for BENCHMARKS.md.

Usage: bench/market_throughput.py TARGET_DIR [TASKS] [ROUNDS] [ONE_BY_ONE]

TARGET_DIR holds release builds of `claude-max-market` and `mock-anthropic`
(`cargo build --release -p claude-max-market -p mock-anthropic`);
`nats-server` (with JetStream) must be on PATH. Each round runs TASKS
(default 24) tasks four at a time, alternating which side goes first:

- market: `execute --market` from one requester to two providers (`serve`,
  two slots each) on a NATS server on loopback. Every task is chosen,
  encrypted, posted, decided by the provider's four policies, claimed,
  locked on the ledger, run, returned encrypted, verified and released.
- local: the same tasks as `execute --approve-all` on one provider's home:
  the same job image, mock and policies, without the market.

The job is the hardened job image against the Messages API mock, which
answers at once, so the job itself does next to nothing: what is measured
is matching, settling and container start. A task counts as matched when
its requester locked the price (the audit's `market.lock` row); the time
to match is from `market.task-posted` to that row.

Then ONE_BY_ONE (default 20) tasks run one at a time, nothing else on the
market, for the round trip of a one-request task: the wall time of
`execute --market` (process start to exit) and, from the requester's audit,
the time from `market.task-posted` to `market.release` (posted to result
checked and paid).

Prints tasks per second on each side, their ratio, the median and maximum
time to match, and the medians of the round trip.
"""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

KEY = "sk-ant-bench-key"
IMAGE = "claude-max-market-job:bench"
PROMPT = "Say hello in a few words"
CONCURRENCY = 4


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"nats-server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit("nats-server did not start listening within 30 s")


def start_market(mock, root, procs):
    """Starts a NATS server with JetStream on a free loopback port and the
    Messages API mock, adding both to `procs`; returns the port and the
    mock's URL."""
    port = free_port()
    nats = subprocess.Popen(
        ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port),
         "-sd", os.path.join(root, "nats")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(nats)
    wait_for_port(port, nats)
    up = subprocess.Popen([mock, "--key", KEY, "--listen", "127.0.0.1:0"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    procs.append(up)
    return port, up.stdout.readline().decode().strip()


def stop_all(procs):
    """Stops `procs`, newest first: closing a child's stdin, then SIGTERM,
    then SIGKILL after a minute."""
    for proc in reversed(procs):
        if proc.stdin:
            proc.stdin.close()
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def at_ms(stamp):
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000


class Node:
    def __init__(self, cmm, root, name):
        self.cmm = cmm
        self.home = os.path.join(root, name)

    def run(self, *args, check=True):
        result = subprocess.run([self.cmm, "--home", self.home, *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if check and result.returncode != 0:
            sys.exit(f"{' '.join(args[:3])} failed ({result.returncode}): "
                     f"{result.stderr.decode()}")
        return result

    def json(self, *args):
        return json.loads(self.run("--json", *args).stdout)

    def set(self, *pairs):
        args = []
        for pair in pairs:
            args += ["--set", pair]
        self.run("config", *args)


def batch(command, tasks):
    """Runs `tasks` commands CONCURRENCY at a time; returns the wall time (s)."""
    def one(_):
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if result.returncode != 0:
            sys.exit(f"a task failed ({result.returncode}): {result.stdout.decode()}"
                     f"{result.stderr.decode()}")

    start = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, range(tasks)))
    return time.perf_counter() - start


def market_tasks(requester):
    """The ids of every task the requester has posted."""
    return {entry["subject"] for entry in requester.json("audit", "--format", "json")["entries"]
            if entry["kind"] == "market.task-posted"}


def spans(requester, end_kind, tasks=None):
    """Time (ms) from each task's `market.task-posted` audit row to its
    `end_kind` row, for every task (or only `tasks`) that has both."""
    posted, ended = {}, {}
    for entry in requester.json("audit", "--format", "json")["entries"]:
        task = entry["subject"]
        if entry["kind"] == "market.task-posted":
            posted[task] = at_ms(entry["ts"])
        elif entry["kind"] == end_kind:
            ended[task] = at_ms(entry["ts"])
    return [ended[t] - posted[t] for t in (ended if tasks is None else tasks) if t in posted and t in ended]


def main():
    target = sys.argv[1]
    tasks = int(sys.argv[2]) if len(sys.argv) > 2 else 24
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    one_by_one = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    cmm = os.path.join(target, "claude-max-market")
    mock = os.path.join(target, "mock-anthropic")
    if shutil.which("nats-server") is None:
        sys.exit("nats-server is not on PATH (apt-get install nats-server)")
    root = tempfile.mkdtemp(prefix="cmm-market-bench-")
    procs = []
    serve_logs = []
    try:
        port, api = start_market(mock, root, procs)

        requester = Node(cmm, root, "requester")
        requester.run("opt-in", "--accept-terms", "--claude-jobs")
        issuer = requester.json("keys", "show")["current"]["node_id"]
        market = [f"market.url=nats://127.0.0.1:{port}", f"market.issuerKeys={issuer}",
                  "market.maxBidPrice=1000"]
        # A market job is the requester's own job too: its approval decides
        # first, and --approve-all counts only where this allows it.
        requester.set("compliance.allowAutoApprove=true", "limits.dailyTasks=1000000",
                      "limits.dailyTokens=1000000000", "limits.concurrentJobs=8", *market)
        requester.run("market", "grant", "--to", issuer, "--amount", "100000000")

        providers = [Node(cmm, root, f"provider{i}") for i in range(2)]
        os.environ["ANTHROPIC_API_KEY"] = KEY
        for p in providers:
            p.run("opt-in", "--accept-terms", "--claude-jobs")
            p.set(f"api.baseUrl={api}", f"docker.image={IMAGE}",
                  "compliance.allowAutoApprove=true", "limits.dailyTasks=1000000",
                  "limits.dailyTokens=1000000000", "limits.concurrentJobs=8",
                  "market.slots=2", *market)
        providers[0].run("docker:build", "--tag", IMAGE)
        serve_logs = []
        for p in providers:
            log = open(os.path.join(root, f"{os.path.basename(p.home)}-serve.log"), "wb")
            serve_logs.append(log.name)
            procs.append(subprocess.Popen(
                [cmm, "--home", p.home, "serve", "--approve-all", "--price", "1"],
                stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while len(requester.json("market", "offers")) < 2:
            if time.monotonic() > deadline:
                sys.exit("the two providers' offers did not appear within 60 s")
            time.sleep(0.2)

        on_market = [cmm, "--home", requester.home, "execute", "--market", "--approve-all",
                     "--max-tokens", "1024", "--prompt", PROMPT]
        local = [cmm, "--home", providers[0].home, "execute", "--approve-all",
                 "--max-tokens", "1024", "--prompt", PROMPT]
        # Warm up both paths (image layers, page cache, the streams).
        batch(on_market, CONCURRENCY)
        batch(local, CONCURRENCY)
        market_rates, local_rates = [], []
        for i in range(rounds):
            sides = [(on_market, market_rates), (local, local_rates)]
            for command, rates in sides if i % 2 == 0 else reversed(sides):
                rates.append(tasks / batch(command, tasks))
        matched = spans(requester, "market.lock")
        before = market_tasks(requester)
        walls = []
        for _ in range(one_by_one):
            start = time.perf_counter()
            subprocess.run(on_market, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            walls.append((time.perf_counter() - start) * 1000)
        trips = spans(requester, "market.release", market_tasks(requester) - before)
    except SystemExit:
        # Why the providers passed a task over is in what `serve` printed.
        for name in serve_logs:
            with open(name, encoding="utf-8", errors="replace") as log:
                print(f"--- {os.path.basename(name)} (last lines)", file=sys.stderr)
                print("".join(log.readlines()[-8:]), file=sys.stderr)
        raise
    finally:
        stop_all(procs)
        subprocess.run(["docker", "rmi", "-f", IMAGE], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        if os.environ.get("CMM_BENCH_KEEP"):
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    m_market, m_local = statistics.median(market_rates), statistics.median(local_rates)
    runs = ", ".join(f"{r:.2f}" for r in market_rates)
    print(f"market: median {m_market:.2f} tasks/s ({runs}; {tasks} tasks x {rounds})")
    runs = ", ".join(f"{r:.2f}" for r in local_rates)
    print(f"local:  median {m_local:.2f} tasks/s ({runs})")
    print(f"ratio of medians market / local: {m_market / m_local:.3f}")
    print(f"time to match: median {statistics.median(matched):.0f} ms, "
          f"max {max(matched):.0f} ms, n={len(matched)}")
    print(f"one task at a time: execute --market median {statistics.median(walls):.0f} ms "
          f"(min {min(walls):.0f}, max {max(walls):.0f}); posted to released median "
          f"{statistics.median(trips):.0f} ms (min {min(trips):.0f}, max {max(trips):.0f}), "
          f"n={len(trips)}")


if __name__ == "__main__":
    main()
