#!/usr/bin/env python3
"""Issue targets for the daemon: log delivery >= 200 MiB/s and >= half a plain HTTP upload of the
same bytes; agent RSS < 32 MB.

Starts amlnode-controlplane and one `amlnode agent` on loopback, submits a job that writes
--mib MiB of stdout as fast as it can and then sleeps, and times how long the agent takes to get
every byte to the control plane (polling the stream's length every 10 ms, from the first byte to
the last). Baseline: while the run still holds its lease, the same number of bytes PUT by this
script to another stream of the same run with the node's token, in 4 MiB chunks (the agent's chunk
size) over one kept-alive connection: a plain HTTP upload with no files, cursors or SQLite on the
sending side.

Besides the wall-clock rates, which depend on what else the machine is doing, it prints the CPU
time the agent and the control plane spent per MiB in each phase (utime + stime from /proc), which
is far less noisy on a shared machine. RSS is the agent's peak (VmHWM) at the end.
"""

import argparse
import http.client
import os
import re
import sqlite3
import time
from pathlib import Path

from cluster import Client, LocalCluster, empty_snapshot
from common import require_build, verdict

CHUNK = 4 << 20


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stream_length(client, run_id, stream):
    status, body = client.json("GET", f"/v1/runs/{run_id}/logs")
    return body.get("streams", {}).get(stream, 0) if status == 200 else 0


def baseline_upload(port, token, run_id, epoch, total):
    chunk = (b"x" * 99 + b"\n") * (CHUNK // 100 + 1)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sent = 0
    started = time.perf_counter()
    while sent < total:
        piece = memoryview(chunk)[: min(CHUNK, total - sent)]
        conn.request("PUT", f"/v1/runs/{run_id}/logs/logs/baseline.txt?offset={sent}", body=piece,
                     headers={"Authorization": f"Bearer {token}", "X-Amlnode-Epoch": str(epoch),
                              "Content-Length": str(len(piece))})
        answer = conn.getresponse()
        answer.read()
        if answer.status != 200:
            raise SystemExit(f"bench: baseline upload answered {answer.status}")
        sent += len(piece)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=512)
    args = parser.parse_args()
    require_build()
    cluster = LocalCluster(prefix="amlnode-bench-agent-", server_flags=("--heartbeat-interval", "1"))
    try:
        agent, state = cluster.add_agent(lease_wait=5)
        total = args.mib << 20
        job = ("user_managed: true\nuse_docker: false\n"
               f"command: \"yes $(printf 'x%.0s' $(seq 1 99)) | head -c {total}; sleep 600\"\n")
        run_id = cluster.client.submit(job, "bench", empty_snapshot())
        stream = "user_logs/std_log.txt"
        poller = Client(cluster.port)
        while stream_length(poller, run_id, stream) == 0:
            time.sleep(0.005)
        first = time.perf_counter()
        cpu_agent, cpu_server = cpu_seconds(agent.pid), cpu_seconds(cluster.server.pid)
        while stream_length(poller, run_id, stream) < total:
            time.sleep(0.01)
        delivery = time.perf_counter() - first
        agent_cpu = cpu_seconds(agent.pid) - cpu_agent
        server_cpu = cpu_seconds(cluster.server.pid) - cpu_server
        node_token = sqlite3.connect(state / "agent.db").execute("SELECT node_token FROM identity").fetchone()[0]
        epoch = cluster.client.run(run_id)["epoch"]
        cpu_server = cpu_seconds(cluster.server.pid)
        baseline = baseline_upload(cluster.port, node_token, run_id, epoch, total)
        base_server_cpu = cpu_seconds(cluster.server.pid) - cpu_server
        cluster.client.json("POST", f"/v1/runs/{run_id}/cancel", {})
        rss_kb = int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{agent.pid}/status").read_text()).group(1))
    finally:
        cluster.stop()
    rate = args.mib / delivery
    base_rate = args.mib / baseline
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"agent log delivery: {args.mib} MiB in {delivery:.2f} s = {rate:.0f} MiB/s  "
          f"(CPU per MiB: agent {agent_cpu / args.mib * 1000:.2f} ms, control plane "
          f"{server_cpu / args.mib * 1000:.2f} ms)")
    print(f"plain HTTP upload:  {args.mib} MiB in {baseline:.2f} s = {base_rate:.0f} MiB/s  "
          f"(CPU per MiB: control plane {base_server_cpu / args.mib * 1000:.2f} ms)")
    print(f"ratio agent/plain:  {rate / base_rate:.2f} (target >= 0.5)  {verdict(rate / base_rate >= 0.5)}")
    print(f"absolute:           {rate:.0f} MiB/s (target >= 200)  {verdict(rate >= 200)}")
    print(f"agent peak RSS:     {rss_kb / 1024:.1f} MB (target < 32)  {verdict(rss_kb < 32 * 1024)}")


if __name__ == "__main__":
    main()
