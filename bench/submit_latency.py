#!/usr/bin/env python3
"""Issue 4 target: from submit to the entry process starting on an idle node (cached environment),
p50 under 50 ms.

Starts amlnode-controlplane and one `amlnode agent` on loopback. The agent is idle with its
long-poll lease waiting at the server. Each round submits a job whose command is
`date +%s%N` (its output is the wall-clock time at which the entry process ran) and takes the
wall-clock time just before the submit; once the run is Completed its log gives the start time.
The submit is the HTTP API's (POST /v1/runs, PUT the snapshot), as `amlnode submit` sends it after
packing the source folder, so the client's own start-up is not counted.

Two environments: user-managed (the interpreter as it is), and a pip environment already built
(one warm-up run builds it; the measured rounds reuse the cache).

Baseline, measured in the same run: the same command started directly with subprocess, from the
same wall-clock reading to its own `date`: what starting a process costs here at all.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from cluster import LocalCluster, empty_snapshot
from common import ROOT, percentile, require_build, verdict

TARGET_P50_MS = 50.0
COMMAND = 'command: ["date", "+%s%N"]\n'


def one_round(cluster, job_text, snapshot):
    before = time.time_ns()
    run_id = cluster.client.submit(job_text, "bench", snapshot)
    cluster.client.wait_completed(run_id)
    started = int(cluster.client.log(run_id).split()[0])
    return (started - before) / 1e6


def baseline_round():
    before = time.time_ns()
    out = subprocess.run(["date", "+%s%N"], capture_output=True, check=True).stdout
    return (int(out) - before) / 1e6


def measure(cluster, name, job_text, rounds, snapshot):
    one_round(cluster, job_text, snapshot)  # warm-up: builds the environment when there is one
    samples = []
    for _ in range(rounds):
        time.sleep(0.1)  # idle again: the agent's next long poll is waiting at the server
        samples.append(one_round(cluster, job_text, snapshot))
    return samples


def report(name, samples, base_p50):
    p50 = statistics.median(samples)
    print(f"{name:<22} p50 {p50:6.1f} ms  p90 {percentile(samples, 0.9):6.1f} ms  "
          f"max {max(samples):6.1f} ms  (p50 - baseline {p50 - base_p50:5.1f} ms)  "
          f"target p50 < {TARGET_P50_MS:.0f} ms  {verdict(p50 < TARGET_P50_MS)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--no-pip", action="store_true", help="skip the pip environment")
    args = parser.parse_args()
    require_build()
    cluster = LocalCluster(prefix="amlnode-bench-submit-")
    try:
        extra = ""
        if not args.no_pip:
            wheels = cluster.work / "wheels"
            subprocess.run([sys.executable, str(ROOT / "tests/executors/environments/make_wheel.py"),
                            str(wheels), "bench_pkg", "1.0"], check=True, stdout=subprocess.DEVNULL)
            extra = f"environments:\n  pip_args: [--no-index, --find-links, {wheels}]\n"
        cluster.add_agent(extra_config=extra)
        cluster.wait_for_lease_poll()
        snapshot = empty_snapshot()
        base = [baseline_round() for _ in range(args.rounds)]
        results = {"user-managed": measure(cluster, "user-managed",
                                           "user_managed: true\nuse_docker: false\n" + COMMAND,
                                           args.rounds, snapshot)}
        if not args.no_pip:
            results["pip (cached)"] = measure(cluster, "pip",
                                              "use_docker: false\npip_packages: [bench_pkg==1.0]\n" + COMMAND,
                                              args.rounds, snapshot)
    finally:
        cluster.stop()
    base_p50 = statistics.median(base)
    print(f"submit -> entry process start, {args.rounds} rounds each, idle agent with a waiting lease")
    print(f"{'baseline (fork+exec)':<22} p50 {base_p50:6.1f} ms  p90 {percentile(base, 0.9):6.1f} ms")
    for name, samples in results.items():
        report(name, samples, base_p50)


if __name__ == "__main__":
    main()
