#!/usr/bin/env python3
"""Host overhead of `execute` over a bare `docker run --rm`, for BENCHMARKS.md.

Usage: bench/job_overhead.py TARGET_DIR [RUNS]

TARGET_DIR holds release builds of `claude-max-market` and `mock-anthropic`
(`cargo build --release -p claude-max-market -p mock-anthropic`). RUNS
(default 20) pairs are timed, alternating, after two warm-up runs of each.

Both sides run the same hardened job image with the same flags and the same
job spec on stdin, against the same Messages API mock:

- `execute`: the whole product path. Consent check, the four policy plugins,
  the admission transaction, the container through bollard, the per-job
  gateway forwarding (with the key) to the mock over loopback TCP, metering
  into SQLite, settling and the audit rows.
- `docker run --rm`: the docker CLI with every flag `execute` sets, the
  worker talking straight to the mock on a Unix socket bind-mounted where the
  gateway's would be. No policy, no gateway, no database.

Prints the median of each and their ratio (goal: <= 1.05).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

KEY = "sk-ant-bench-key"
IMAGE = "claude-max-market-job:bench"
PROMPT = "Say hello in a few words"


def timed(cmd, stdin=None):
    start = time.perf_counter()
    result = subprocess.run(
        cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False
    )
    elapsed = (time.perf_counter() - start) * 1000
    if result.returncode != 0:
        sys.exit(f"{cmd[:4]}... failed ({result.returncode}): {result.stderr.decode()}")
    return elapsed


def start_mock(mock, args):
    proc = subprocess.Popen([mock, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    url = proc.stdout.readline().decode().strip()
    return proc, url


def main():
    target = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    cmm = os.path.join(target, "claude-max-market")
    mock = os.path.join(target, "mock-anthropic")
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as sockdir:
        os.chmod(sockdir, 0o755)
        tcp_mock, url = start_mock(mock, ["--key", KEY, "--listen", "127.0.0.1:0"])
        # No gateway on this side to add a key, so the mock asks for none.
        unix_mock, _ = start_mock(
            mock, ["--no-auth", "--unix", os.path.join(sockdir, "gateway.sock")]
        )
        try:
            run = lambda *a: subprocess.run([cmm, "--home", home, *a], check=True,
                                            stdout=subprocess.DEVNULL)
            run("opt-in", "--accept-terms", "--claude-jobs")
            run("config", "--set", f"api.baseUrl={url}", "--set", f"docker.image={IMAGE}",
                "--set", "compliance.allowAutoApprove=true",
                "--set", "limits.dailyTasks=100000", "--set", "limits.dailyTokens=100000000")
            run("docker:build", "--tag", IMAGE)
            env_execute = [cmm, "--home", home, "execute", "--approve-all", "--max-tokens",
                           "1024", "--prompt", PROMPT]
            spec = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 1024,
                               "prompt": PROMPT, "stream": True}).encode()
            docker_run = [
                "docker", "run", "--rm", "-i", "--read-only",
                "--tmpfs", "/tmp:rw,noexec,nosuid,nodev,size=67108864",
                "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
                "--user", "65532:65532", "--network", "none", "--pids-limit", "64",
                "--memory", "512m", "--memory-swap", "512m", "--cpu-shares", "512",
                "--init", "--ipc", "none",
                "--mount", f"type=bind,src={sockdir},dst=/run/cmm,readonly",
                IMAGE,
            ]
            os.environ["ANTHROPIC_API_KEY"] = KEY
            for _ in range(2):
                timed(env_execute)
                timed(docker_run, spec)
            ours, bare = [], []
            for i in range(runs):
                # Alternate which goes first, so drift on a shared machine
                # lands on both sides.
                if i % 2 == 0:
                    ours.append(timed(env_execute))
                    bare.append(timed(docker_run, spec))
                else:
                    bare.append(timed(docker_run, spec))
                    ours.append(timed(env_execute))
        finally:
            for proc in (tcp_mock, unix_mock):
                proc.stdin.close()
                proc.wait(timeout=10)
            subprocess.run(["docker", "rmi", "-f", IMAGE], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
    m_ours, m_bare = statistics.median(ours), statistics.median(bare)
    print(f"execute:         median {m_ours:.1f} ms (min {min(ours):.1f}, max {max(ours):.1f}, n={runs})")
    print(f"docker run --rm: median {m_bare:.1f} ms (min {min(bare):.1f}, max {max(bare):.1f}, n={runs})")
    print(f"ratio of medians execute / docker run: {m_ours / m_bare:.3f}")


if __name__ == "__main__":
    main()
