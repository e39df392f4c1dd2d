#!/usr/bin/env python3
"""What a job costs an unmodified client, for BENCHMARKS.md.

Usage: bench/agent_jobs.py TARGET_DIR [REQUESTS] [STARTS]

TARGET_DIR holds release builds of `claude-max-market` and `mock-anthropic`
(`cargo build --release -p claude-max-market -p mock-anthropic`). The client
is the official `anthropic` SDK in the image the CLI tests build
(`cargo test --test cli python_sdk`, which leaves the image in the Docker
Engine and the SDK in ~/.cache/claude-max-market-tests, or $CMM_TEST_CACHE);
this script finds both there.

Two measurements, each side by side in one run, alternating which goes first:

1. Latency the gateway adds per request. The same Python (Debian's
   python3.11, which the image holds too) and the same SDK make REQUESTS
   sequential non-streamed `messages.create` calls after 20 warm-up calls:
   inside a job (container loopback -> relay -> Unix socket -> gateway, which
   meters and forwards with the key over loopback TCP -> mock), and on the
   host straight to the same mock. Per-request p50 and p99 of each; the
   difference of the p50s is what the job adds (goal: <= 1 ms).
2. Start to first request, STARTS times each: from spawning the command to
   the upstream receiving its first request (made with Python's standard
   library: the SDK's import alone takes seconds in an image without
   compiled bytecode). `execute --image ... --
   python3 one.py` against `docker run --rm` of the same image with the
   flags `execute` sets, except that the baseline shares the host's network
   so it can reach the upstream at all (no gateway, no relay, no policy, no
   workspace copy). Ratio of medians (goal: <= 1.1).
"""

import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY = "sk-ant-bench-key"
MODEL = "claude-sonnet-4-5"
PYTHON = "/usr/bin/python3.11"

LATENCY = """
import json, sys, time
import anthropic
client = anthropic.Anthropic(max_retries=0)
def call():
    client.messages.create(model="%s", max_tokens=16,
                           messages=[{"role": "user", "content": "ping"}])
for _ in range(20):
    call()
times = []
for _ in range(int(sys.argv[1])):
    start = time.perf_counter()
    call()
    times.append((time.perf_counter() - start) * 1000)
print(json.dumps(times))
""" % MODEL

# The SDK imports for seconds in an image that holds no compiled bytecode,
# which would hide the job's own start-up; the standard library's client
# makes the same request at once.
ONE = """
import json, os, urllib.request
body = json.dumps({"model": "%s", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "ping"}]}).encode()
request = urllib.request.Request(
    os.environ["ANTHROPIC_BASE_URL"] + "/v1/messages", data=body,
    headers={"content-type": "application/json", "anthropic-version": "2023-06-01",
             "x-api-key": os.environ["ANTHROPIC_API_KEY"]})
urllib.request.urlopen(request).read()
""" % MODEL


def sdk_image():
    tags = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "cmm-test-python-sdk"],
        capture_output=True, text=True, check=True).stdout.split()
    if not tags:
        sys.exit("no cmm-test-python-sdk image: run `cargo test --test cli python_sdk` first")
    return tags[0]


def sdk_site():
    cache = os.environ.get("CMM_TEST_CACHE") or os.path.expanduser(
        "~/.cache/claude-max-market-tests")
    found = glob.glob(os.path.join(cache, "pip-anthropic*"))
    if not found:
        sys.exit("no cached anthropic SDK: run `cargo test --test cli python_sdk` first")
    return found[0]


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class FirstRequest(BaseHTTPRequestHandler):
    """An upstream that notes when a request arrives and answers it the way
    the Messages API does."""

    arrived = []

    def do_POST(self):
        FirstRequest.arrived.append(time.time())
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps({
            "id": "msg_bench", "type": "message", "role": "assistant", "model": MODEL,
            "content": [{"type": "text", "text": "pong"}], "stop_reason": "end_turn",
            "stop_sequence": None, "usage": {"input_tokens": 9, "output_tokens": 2},
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def home(cmm, url, path):
    run = lambda *a: subprocess.run([cmm, "--home", path, *a], check=True,
                                    stdout=subprocess.DEVNULL)
    run("opt-in", "--accept-terms", "--claude-jobs")
    run("config", "--set", f"api.baseUrl={url}", "--set", "compliance.allowAutoApprove=true",
        "--set", "limits.dailyTasks=100000", "--set", "limits.dailyTokens=1000000000",
        "--set", "limits.requestsPerJob=10000")


def execute(cmm, path, image, workspace, *command):
    env = dict(os.environ, ANTHROPIC_API_KEY=KEY)
    out = subprocess.run(
        [cmm, "--home", path, "execute", "--approve-all", "--json", "--image", image,
         "--workspace", workspace, "--max-requests", "10000", "--", *command],
        capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        sys.exit(f"execute failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.splitlines()[-1])


def latency(cmm, mock, image, site, requests):
    proc = subprocess.Popen([mock, "--key", KEY, "--listen", "127.0.0.1:0"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    url = proc.stdout.readline().decode().strip()
    try:
        with tempfile.TemporaryDirectory() as path, tempfile.TemporaryDirectory() as ws:
            home(cmm, url, path)
            with open(os.path.join(ws, "latency.py"), "w") as f:
                f.write(LATENCY)
            host_env = dict(os.environ, ANTHROPIC_BASE_URL=url, ANTHROPIC_API_KEY=KEY,
                            PYTHONPATH=site)
            inside, outside = [], []
            for round_ in range(4):
                def job():
                    doc = execute(cmm, path, image, ws, "python3", "latency.py", str(requests))
                    inside.extend(json.loads(doc["output"].strip().splitlines()[-1]))

                def host():
                    out = subprocess.run([PYTHON, os.path.join(ws, "latency.py"), str(requests)],
                                         capture_output=True, text=True, env=host_env,
                                         check=True)
                    outside.extend(json.loads(out.stdout.strip().splitlines()[-1]))

                for step in ((job, host) if round_ % 2 == 0 else (host, job)):
                    step()
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    return inside, outside


def starts(cmm, image, runs):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FirstRequest)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    ours, bare = [], []
    try:
        with tempfile.TemporaryDirectory() as path, tempfile.TemporaryDirectory() as ws:
            home(cmm, url, path)
            with open(os.path.join(ws, "one.py"), "w") as f:
                f.write(ONE)
            os.chmod(ws, 0o755)
            docker_run = [
                "docker", "run", "--rm", "--read-only",
                "--tmpfs", "/tmp:rw,noexec,nosuid,nodev,size=134217728",
                "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
                "--user", "65532:65532", "--network", "host", "--pids-limit", "256",
                "--memory", "1g", "--memory-swap", "1g", "--cpu-shares", "512",
                "--init", "--ipc", "none", "-e", f"ANTHROPIC_BASE_URL={url}",
                "-e", f"ANTHROPIC_API_KEY={KEY}", "-e", "HOME=/tmp",
                "--mount", f"type=bind,src={ws},dst=/workspace,readonly",
                "-w", "/workspace", image, "python3", "one.py",
            ]

            def first_request(run):
                FirstRequest.arrived.clear()
                start = time.time()
                run()
                return (FirstRequest.arrived[0] - start) * 1000

            job = lambda: execute(cmm, path, image, ws, "python3", "one.py")
            baseline = lambda: subprocess.run(docker_run, check=True, capture_output=True)
            for _ in range(2):
                first_request(job)
                first_request(baseline)
            for i in range(runs):
                if i % 2 == 0:
                    ours.append(first_request(job))
                    bare.append(first_request(baseline))
                else:
                    bare.append(first_request(baseline))
                    ours.append(first_request(job))
    finally:
        server.shutdown()
    return ours, bare


def main():
    target = sys.argv[1]
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 250
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    cmm = os.path.join(target, "claude-max-market")
    mock = os.path.join(target, "mock-anthropic")
    image, site = sdk_image(), sdk_site()

    inside, outside = latency(cmm, mock, image, site, requests)
    print(f"per request, {len(inside)} each side ({image}):")
    for name, values in (("in a job (relay + gateway)", inside), ("host -> mock", outside)):
        print(f"  {name:28} p50 {percentile(values, 50):.3f} ms  p99 {percentile(values, 99):.3f} ms")
    print(f"  added by the job at p50: {percentile(inside, 50) - percentile(outside, 50):.3f} ms, "
          f"at p99: {percentile(inside, 99) - percentile(outside, 99):.3f} ms")

    ours, bare = starts(cmm, image, runs)
    m_ours, m_bare = statistics.median(ours), statistics.median(bare)
    print(f"start to first request, n={runs} each:")
    print(f"  execute:         median {m_ours:.1f} ms (min {min(ours):.1f}, max {max(ours):.1f})")
    print(f"  docker run --rm: median {m_bare:.1f} ms (min {min(bare):.1f}, max {max(bare):.1f})")
    print(f"  ratio of medians: {m_ours / m_bare:.3f}")


if __name__ == "__main__":
    main()
