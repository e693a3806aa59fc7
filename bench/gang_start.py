#!/usr/bin/env python3
"""Issue 13 target: from submit to every rank of a 2-node x 2-process run started, on idle nodes
with a cached (user-managed) environment: p50 <= 150 ms.

Starts amlnode-controlplane and two `amlnode agent`s on loopback, each idle with its long-poll
lease waiting at the server. Each round submits a PyTorch-style job of 4 processes over 2 nodes
whose command is `date +%s%N`: every rank's log (user_logs/std_log_process_NN.txt, one per rank
in the run) holds the wall-clock time at which that rank ran. The round's time is from just before
the submit (POST /v1/runs with node_count 2, then the snapshot) to the last of the four. That
covers the gang lease (the second node's share reaching its waiting long poll), both shares'
preparation, the barrier and the four process starts.

Baseline, measured in the same run: the same four commands started directly with subprocess
from the same clock reading (what starting four processes costs here at all).
"""

import argparse
import statistics
import subprocess
import time

from cluster import LocalCluster, empty_snapshot
from common import percentile, require_build, verdict

TARGET_P50_MS = 150.0
JOB = ('command: ["date", "+%s%N"]\n'
       "distributed_job_config: {type: pytorch, communication_backend: gloo, process_count: 4, "
       "node_count: 2}\n")


def one_round(cluster, snapshot):
    before = time.time_ns()
    run_id = cluster.client.submit(JOB, "bench", snapshot, node_count=2)
    cluster.client.wait_completed(run_id)
    starts = []
    for rank in range(4):
        text = cluster.client.log(run_id, f"user_logs/std_log_process_{rank:02d}.txt").split()
        if not text:
            raise SystemExit(f"bench: run {run_id} has no log for rank {rank}")
        starts.append(int(text[0]))
    return (max(starts) - before) / 1e6


def baseline_round():
    before = time.time_ns()
    procs = [subprocess.Popen(["date", "+%s%N"], stdout=subprocess.PIPE) for _ in range(4)]
    starts = [int(p.communicate()[0]) for p in procs]
    return (max(starts) - before) / 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    require_build()
    cluster = LocalCluster(prefix="amlnode-bench-gang-")
    try:
        cluster.add_agent()
        cluster.add_agent()
        cluster.wait_for_lease_poll()
        snapshot = empty_snapshot()
        one_round(cluster, snapshot)  # warm-up
        samples = []
        for _ in range(args.rounds):
            time.sleep(0.1)  # idle again: both agents' long polls are waiting at the server
            samples.append(one_round(cluster, snapshot))
        base = [baseline_round() for _ in range(args.rounds)]
    finally:
        cluster.stop()
    p50 = statistics.median(samples)
    base_p50 = statistics.median(base)
    print(f"baseline: 4 processes started directly  p50 {base_p50:6.1f} ms")
    print(f"2 nodes x 2 processes, submit -> every rank started  p50 {p50:6.1f} ms  "
          f"p90 {percentile(samples, 0.9):6.1f} ms  max {max(samples):6.1f} ms  "
          f"(p50 / baseline {p50 / base_p50:5.1f}x)  target p50 <= {TARGET_P50_MS:.0f} ms  "
          f"{verdict(p50 <= TARGET_P50_MS)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
