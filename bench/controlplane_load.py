#!/usr/bin/env python3
"""Issue target: the control plane serves 1,000 simulated nodes heartbeating every 5 s plus 100
leases/s on this 2-core machine with p99 latency under 50 ms.

Starts amlnode-controlplane on a loopback port with a fresh data dir, registers 1,000 nodes (each
with its own registration token), then runs one fixed schedule twice over the same connections:

  baseline  every request is `GET /v1/health` (a static answer from the same server: HTTP, the
            io thread and the client, with no state and no SQLite);
  load      the real thing: heartbeats (200/s, each node every 5 s, spread evenly), leases
            (100/s, round robin over the nodes, each on the node's own lease connection), a
            submitter queueing runs at the lease rate (POST /v1/runs + PUT snapshot) so leases
            return work, and each node reporting a leased run Completed.

Prints p50/p99/max per endpoint for both, the ratios load/baseline, and the verdict. Latency is
measured from the moment a request is written until its answer is read; `lag` is how late the
generator itself sent requests against the schedule, so a slow generator is visible. Stops by
itself after --baseline-seconds + --seconds (plus registration).
"""

import argparse
import asyncio
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from common import ROOT, verdict

USER_TOKEN = "bench-user-token"
TARGET_P99_MS = 50.0


class Connection:
    """One kept-alive HTTP/1.1 connection; requests on it go one at a time."""

    def __init__(self, port):
        self.port = port
        self.reader = None
        self.writer = None
        self.lock = asyncio.Lock()

    async def request(self, method, target, token="", body=b"", headers=None):
        async with self.lock:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            head = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
            if token:
                head.append(f"Authorization: Bearer {token}")
            for name, value in (headers or {}).items():
                head.append(f"{name}: {value}")
            started = time.perf_counter()
            self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            status_line = await self.reader.readline()
            length = 0
            close = False
            while True:
                line = await self.reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "connection" and value.strip().lower() == "close":
                    close = True
            payload = await self.reader.readexactly(length) if length else b""
            elapsed = time.perf_counter() - started
            if close:
                self.writer.close()
                self.writer = None
            status = int(status_line.split()[1]) if status_line else 0
            return status, payload, elapsed

    def close(self):
        if self.writer is not None:
            self.writer.close()


class Recorder:
    def __init__(self):
        self.latencies = defaultdict(list)
        self.errors = defaultdict(int)
        self.lag = []

    def add(self, endpoint, status, elapsed, ok_statuses=(200, 201)):
        self.latencies[endpoint].append(elapsed * 1000)
        if status not in ok_statuses:
            self.errors[endpoint] += 1


def percentile(values, q):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]


def start_server(binary, data_dir):
    out = open(data_dir.parent / "server.out", "w+")
    process = subprocess.Popen(
        [str(binary), "--listen", "127.0.0.1:0", "--data-dir", str(data_dir),
         "--user-token", USER_TOKEN, "--log-level", "warn"],
        stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 10
    while time.time() < deadline:
        out.seek(0)
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", out.read())
        if match:
            return process, int(match.group(1))
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    out.seek(0)
    raise SystemExit("bench: the control plane did not start:\n" + out.read())


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def register_nodes(port, count):
    nodes = []
    counter = itertools.count()

    async def worker():
        user = Connection(port)
        node_conn = Connection(port)
        while (i := next(counter)) < count:
            status, body, _ = await user.request(
                "POST", "/v1/registration-tokens", USER_TOKEN, json.dumps({"compute_name": "cpu"}).encode())
            assert status == 201, body
            token = json.loads(body)["token"]
            status, body, _ = await node_conn.request(
                "POST", "/v1/nodes/register", token,
                json.dumps({"hostname": f"sim-{i}", "ips": [f"10.1.{i // 250}.{i % 250}"], "cpus": 4,
                            "labels": {"compute_name": "cpu"}}).encode())
            assert status == 200, body
            answer = json.loads(body)
            nodes.append((answer["node_id"], answer["node_token"]))
        user.close()
        node_conn.close()

    await asyncio.gather(*(worker() for _ in range(20)))
    return nodes


async def submit_run(user, recorder, index):
    status, body, elapsed = await user.request(
        "POST", "/v1/runs", USER_TOKEN,
        json.dumps({"job": {"text": f"entry_script: train.py\narguments: [{index}]\n", "file_name": "job.yml"},
                    "experiment_name": "bench", "compute_name": "cpu"}).encode())
    recorder.add("submit", status, elapsed)
    if status != 201:
        return
    run_id = json.loads(body)["run_id"]
    status, _, elapsed = await user.request(
        "PUT", f"/v1/runs/{run_id}/snapshot", USER_TOKEN, b"\x1f\x8b" + os.urandom(2048))
    recorder.add("snapshot", status, elapsed)


async def run_phase(port, nodes, seconds, baseline, args, recorder, connections):
    """One pass of the schedule. Every request is GET /v1/health when `baseline`."""
    heartbeat_conns, lease_conns, user_conns = connections
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.5
    end = start + seconds
    tasks = set()
    leased_runs = [0]

    def spawn(coro):
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def at(when):
        delay = when - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        recorder.lag.append(max(0.0, loop.time() - when) * 1000)

    async def health(conn, endpoint):
        status, _, elapsed = await conn.request("GET", "/v1/health")
        recorder.add(endpoint, status, elapsed)

    async def heartbeat(i):
        node_id, token = nodes[i]
        if baseline:
            return await health(heartbeat_conns[i], "heartbeat")
        status, _, elapsed = await heartbeat_conns[i].request(
            "POST", f"/v1/nodes/{node_id}/heartbeat", token, b'{"state": "running", "runs": []}')
        recorder.add("heartbeat", status, elapsed)

    async def lease(i):
        node_id, token = nodes[i]
        if baseline:
            return await health(lease_conns[i], "lease")
        status, body, elapsed = await lease_conns[i].request(
            "POST", f"/v1/nodes/{node_id}/lease", token, b'{"max_runs": 1, "wait_seconds": 0}')
        recorder.add("lease", status, elapsed)
        if status != 200:
            return
        for run in json.loads(body)["runs"]:
            leased_runs[0] += 1
            status, _, elapsed = await lease_conns[i].request(
                "POST", f"/v1/runs/{run['run_id']}/status", token,
                json.dumps({"epoch": run["epoch"], "status": "Completed", "exit_code": 0}).encode())
            recorder.add("status", status, elapsed)

    async def submit(k):
        user = user_conns[k % len(user_conns)]
        if baseline:
            await health(user, "submit")
            return await health(user, "snapshot")
        await submit_run(user, recorder, k)

    async def every(rate, action, offset=0.0):
        period = 1.0 / rate
        for k in itertools.count():
            when = start + offset + k * period
            if when >= end:
                return
            await at(when)
            spawn(action(k))

    heartbeat_period = args.heartbeat_interval / len(nodes)
    await asyncio.gather(
        every(1 / heartbeat_period, lambda k: heartbeat(k % len(nodes))),
        every(args.lease_rate, lambda k: lease((k * 7) % len(nodes)), offset=0.0011),
        every(args.lease_rate, submit, offset=0.0023),
    )
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    return leased_runs[0]


def report(name, recorder, seconds):
    print(f"\n{name}: {sum(len(v) for v in recorder.latencies.values())} requests in {seconds:.0f} s"
          f" (generator lag p99 {percentile(recorder.lag, 99):.1f} ms, max {max(recorder.lag, default=0):.1f} ms)")
    print(f"  {'endpoint':<10} {'count':>7} {'rate/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7}")
    for endpoint in ("heartbeat", "lease", "status", "submit", "snapshot"):
        values = recorder.latencies.get(endpoint)
        if not values:
            continue
        print(f"  {endpoint:<10} {len(values):>7} {len(values) / seconds:>7.1f} {percentile(values, 50):>8.2f}"
              f" {percentile(values, 99):>8.2f} {max(values):>8.2f} {recorder.errors[endpoint]:>7}")


async def main_async(args, port, process):
    print(f"registering {args.nodes} nodes ...", flush=True)
    started = time.perf_counter()
    nodes = await register_nodes(port, args.nodes)
    print(f"registered in {time.perf_counter() - started:.1f} s", flush=True)

    heartbeat_conns = [Connection(port) for _ in nodes]
    lease_conns = [Connection(port) for _ in nodes]
    user_conns = [Connection(port) for _ in range(4)]
    connections = (heartbeat_conns, lease_conns, user_conns)

    # Runs queued ahead, so every lease in the load phase finds work even if a submit is late.
    prefill = Recorder()
    await asyncio.gather(*(submit_run(user_conns[k % 4], prefill, k) for k in range(int(args.lease_rate * 2))))

    baseline = Recorder()
    await run_phase(port, nodes, args.baseline_seconds, True, args, baseline, connections)
    load = Recorder()
    cpu_before = cpu_seconds(process.pid)
    leased = await run_phase(port, nodes, args.seconds, False, args, load, connections)
    server_cpu = (cpu_seconds(process.pid) - cpu_before) / args.seconds

    for conn in heartbeat_conns + lease_conns + user_conns:
        conn.close()

    report("baseline (GET /v1/health on the same schedule)", baseline, args.baseline_seconds)
    report("load", load, args.seconds)
    print(f"\n  leases that returned a run: {leased} of {len(load.latencies['lease'])}")
    print(f"  server CPU during the load: {server_cpu * 100:.0f}% of one core")
    print("\n  ratio load/baseline:")
    ok = True
    for endpoint in ("heartbeat", "lease"):
        ours, base = load.latencies[endpoint], baseline.latencies[endpoint]
        p99 = percentile(ours, 99)
        ok = ok and p99 < TARGET_P99_MS and load.errors[endpoint] == 0
        print(f"    {endpoint:<10} p50 {percentile(ours, 50) / percentile(base, 50):5.2f}x"
              f"  p99 {p99 / percentile(base, 99):5.2f}x  (p99 {p99:.2f} ms, target < {TARGET_P99_MS:.0f} ms)")
    print(f"\n  {args.nodes} nodes heartbeating every {args.heartbeat_interval:g} s + {args.lease_rate:g} leases/s,"
          f" p99 < {TARGET_P99_MS:.0f} ms: {verdict(ok)}")
    return 0 if ok else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=os.environ.get(
        "AMLNODE_CONTROLPLANE", ROOT / "build" / "bin" / "amlnode-controlplane"))
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--heartbeat-interval", type=float, default=5.0)
    parser.add_argument("--lease-rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the load phase")
    parser.add_argument("--baseline-seconds", type=float, default=15.0)
    args = parser.parse_args()
    binary = Path(args.binary)
    if not binary.exists():
        raise SystemExit(f"bench: {binary} not found; build the amlnode-controlplane target first")

    workdir = Path(tempfile.mkdtemp(prefix="amlnode-bench-cp-"))
    process, port = start_server(binary, workdir / "data")
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return asyncio.run(main_async(args, port, process))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
