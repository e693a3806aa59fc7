#!/usr/bin/env python3
"""Issue targets for metrics: one node sample costs < 1 ms of CPU; a /metrics scrape costs at most
half the CPU of a prometheus-node-exporter scrape on the same machine, measured side by side.

1. Sample cost: `metrics_sample_cost sample N DIR` takes N node samples in one process (NVML too,
   when it loads) and reports its user + system CPU (getrusage) divided by N.
2. Scrape cost: our endpoint (`metrics_sample_cost serve DIR`: the daemon's exposition of the node,
   sampled once a second, on 127.0.0.1) and prometheus-node-exporter (Debian's, default collectors,
   on a free loopback port) run side by side; this script scrapes each in turn, --rounds times,
   on kept-alive connections, and reads each server's CPU time (utime + stime of all its threads,
   /proc/<pid>/stat) before and after. Each server's idle CPU over the same time is subtracted.
   Ours is reported twice: the scrape alone (it renders the last sample, as the daemon does), and
   the scrape plus one fresh sample (what a scrape would cost if it sampled, as node-exporter does).
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from common import ROOT, verdict

BUILD = Path(os.environ.get("AMLNODE_BUILD", ROOT / "build"))
TOOL = BUILD / "bench" / "metrics_sample_cost"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port):
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"bench: nothing listens on port {port}")


def scrape(conn):
    conn.request("GET", "/metrics")
    answer = conn.getresponse()
    body = answer.read()
    if answer.status != 200:
        raise SystemExit(f"bench: scrape answered {answer.status}")
    return len(body)


def measure(pid, port, rounds):
    """CPU seconds the server used for `rounds` scrapes, the wall time, and one answer's bytes."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    size = scrape(conn)  # warm up: connection, first-use allocations
    before, start = cpu_seconds(pid), time.monotonic()
    for _ in range(rounds):
        scrape(conn)
    used, wall = cpu_seconds(pid) - before, time.monotonic() - start
    conn.close()
    return used, wall, size


def idle(pid, seconds):
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return cpu_seconds(pid) - before


def sample_cost(samples, state_dir):
    out = subprocess.run([str(TOOL), "sample", str(samples), str(state_dir)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)["per_sample_ms"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    if not TOOL.exists():
        raise SystemExit(f"bench: {TOOL} not found; build the metrics_sample_cost target")
    exporter = shutil.which("prometheus-node-exporter")
    if not exporter:
        raise SystemExit("bench: prometheus-node-exporter not found (apt install prometheus-node-exporter)")
    state_dir = Path(tempfile.mkdtemp(prefix="amlnode-metrics-bench-"))

    per_sample = sample_cost(args.samples, state_dir)
    print(f"node sample: {per_sample:.3f} ms CPU each over {args.samples} samples "
          f"(target < 1 ms): {verdict(per_sample < 1.0)}")

    ours = subprocess.Popen([str(TOOL), "serve", str(state_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    our_port = int(ours.stdout.readline())
    exporter_port = free_port()
    theirs = subprocess.Popen([exporter, f"--web.listen-address=127.0.0.1:{exporter_port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(exporter_port)
        # Side by side: alternate the two, so both see the same machine load.
        our_cpu = their_cpu = our_wall = their_wall = 0.0
        for _ in range(5):
            # Ten times as many of ours: each costs so little that /proc's 10 ms ticks need them.
            used, wall, our_size = measure(ours.pid, our_port, args.rounds // 5 * 10)
            our_cpu, our_wall = our_cpu + used, our_wall + wall
            used, wall, their_size = measure(theirs.pid, exporter_port, args.rounds // 5)
            their_cpu, their_wall = their_cpu + used, their_wall + wall
        span = 5.0
        our_idle, their_idle = idle(ours.pid, span) / span, idle(theirs.pid, span) / span
    finally:
        ours.stdin.close()
        ours.wait(timeout=10)
        theirs.terminate()
        theirs.wait(timeout=10)
    rounds = args.rounds // 5 * 5
    our_ms = max(0.0, our_cpu - our_idle * our_wall) * 1000 / (rounds * 10)
    their_ms = max(0.0, their_cpu - their_idle * their_wall) * 1000 / rounds
    print(f"idle CPU: ours {our_idle * 1000:.1f} ms/s, node-exporter {their_idle * 1000:.1f} ms/s "
          f"(subtracted for the time each was scraped)")
    print(f"scrape, ours: {our_ms:.3f} ms CPU ({our_size} bytes); node-exporter: {their_ms:.3f} ms "
          f"CPU ({their_size} bytes); {rounds * 10} and {rounds} scrapes")
    ratio = our_ms / their_ms if their_ms else float("inf")
    print(f"ratio ours / node-exporter: {ratio:.3f} (target <= 0.5): {verdict(ratio <= 0.5)}")
    fresh = (our_ms + per_sample) / their_ms if their_ms else float("inf")
    print(f"ratio (ours + a fresh sample) / node-exporter: {fresh:.3f} (target <= 0.5): "
          f"{verdict(fresh <= 0.5)}")
    shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
