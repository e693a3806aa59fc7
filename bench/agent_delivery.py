#!/usr/bin/env python3
"""Issue targets for the daemon: log delivery >= 200 MiB/s and >= half a plain HTTP upload of the
same bytes; agent RSS < 32 MB.

Starts amlnode-controlplane and one `amlnode agent` on loopback, submits a job that writes
--mib MiB of stdout as fast as it can and then sleeps, and times how long the agent takes to get
every byte to the control plane (polling the stream's length every 10 ms, from the first byte to
the last). Baseline: while the run still holds its lease, the same number of bytes PUT by this
script to another stream of the same run with the node's token, in 8 MiB chunks (the protocol's
limit) over one kept-alive connection: a plain HTTP upload with no files, cursors or SQLite.
RSS is the agent's peak (VmHWM) at the end.
"""

import argparse
import http.client
import json
import os
import re
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

from common import AMLNODE, ROOT, require_build, verdict

CONTROLPLANE = Path(os.environ.get("AMLNODE_CONTROLPLANE", AMLNODE.parent / "amlnode-controlplane"))
USER = "bench-user-token"


def call(port, method, target, token=USER, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(method, target, body=body, headers={"Authorization": f"Bearer {token}", **(headers or {})})
    answer = conn.getresponse()
    data = answer.read()
    conn.close()
    return answer.status, data


def start_controlplane(work):
    out = open(work / "cp.out", "w+")
    proc = subprocess.Popen([str(CONTROLPLANE), "--listen", "127.0.0.1:0", "--data-dir", str(work / "cp"),
                             "--user-token", USER, "--heartbeat-interval", "1"], stdout=out, stderr=subprocess.STDOUT)
    for _ in range(500):
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", (work / "cp.out").read_text())
        if match:
            return proc, int(match.group(1))
        time.sleep(0.01)
    raise SystemExit("bench: the control plane did not start")


def stream_length(port, run_id, stream):
    status, body = call(port, "GET", f"/v1/runs/{run_id}/logs")
    return json.loads(body).get("streams", {}).get(stream, 0) if status == 200 else 0


def baseline_upload(port, token, run_id, epoch, total):
    chunk = (b"x" * 99 + b"\n") * (8 * 1024 * 1024 // 100)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sent = 0
    started = time.perf_counter()
    while sent < total:
        piece = chunk[: min(len(chunk), total - sent)]
        conn.request("PUT", f"/v1/runs/{run_id}/logs/logs/baseline.txt?offset={sent}", body=piece,
                     headers={"Authorization": f"Bearer {token}", "X-Amlnode-Epoch": str(epoch)})
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
    work = Path(tempfile.mkdtemp(prefix="amlnode-bench-agent-"))
    cp, port = start_controlplane(work)
    agent = None
    try:
        _, body = call(port, "POST", "/v1/registration-tokens", body=json.dumps({"compute_name": "bench"}))
        token = json.loads(body)["token"]
        (work / "agent.yml").write_text(
            f"state_dir: {work / 'state'}\ncontrol_plane: {{url: 'http://127.0.0.1:{port}', registration_token: {token}}}\n"
            "node: {labels: {compute_name: bench}, lease_wait_seconds: 5}\n")
        agent = subprocess.Popen([str(AMLNODE), "agent", "--config", str(work / "agent.yml")],
                                 stdout=open(work / "agent.out", "w"), stderr=subprocess.STDOUT)
        total = args.mib << 20
        src = work / "src"
        src.mkdir()
        (src / "job.yml").write_text(
            "user_managed: true\nuse_docker: false\n"
            f"command: \"yes $(printf 'x%.0s' $(seq 1 99)) | head -c {total}; sleep 600\"\n")
        env = {**os.environ, "AMLNODE_CONTROL_PLANE": f"http://127.0.0.1:{port}", "AMLNODE_USER_TOKEN": USER}
        run_id = subprocess.run([str(AMLNODE), "submit", str(src / "job.yml"), "--compute", "bench"], env=env,
                                check=True, capture_output=True, text=True).stdout.strip()
        stream = "user_logs/std_log.txt"
        while stream_length(port, run_id, stream) == 0:
            time.sleep(0.005)
        first = time.perf_counter()
        while stream_length(port, run_id, stream) < total:
            time.sleep(0.01)
        delivery = time.perf_counter() - first
        node_token = sqlite3.connect(work / "state" / "agent.db").execute("SELECT node_token FROM identity").fetchone()[0]
        _, body = call(port, "GET", f"/v1/runs/{run_id}")
        baseline = baseline_upload(port, node_token, run_id, json.loads(body)["epoch"], total)
        call(port, "POST", f"/v1/runs/{run_id}/cancel", body="{}")
        rss_kb = int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{agent.pid}/status").read_text()).group(1))
    finally:
        if agent:
            agent.terminate()
            agent.wait(timeout=60)
        cp.terminate()
        cp.wait(timeout=30)
    rate = args.mib / delivery
    base_rate = args.mib / baseline
    print(f"agent log delivery: {args.mib} MiB in {delivery:.2f} s = {rate:.0f} MiB/s")
    print(f"plain HTTP upload:  {args.mib} MiB in {baseline:.2f} s = {base_rate:.0f} MiB/s")
    print(f"ratio agent/plain:  {rate / base_rate:.2f} (target >= 0.5)  {verdict(rate / base_rate >= 0.5)}")
    print(f"absolute:           {rate:.0f} MiB/s (target >= 200)  {verdict(rate >= 200)}")
    print(f"agent peak RSS:     {rss_kb / 1024:.1f} MB (target < 32)  {verdict(rss_kb < 32 * 1024)}")


if __name__ == "__main__":
    main()
