#!/usr/bin/env python3
"""Issue 14 target across nodes: >= 2,000 mini-batches/s scheduled for a ParallelRunStep over
2 agents x 2 workers, the control plane handing out every mini-batch over loopback.

Ours: a control plane and two `amlnode agent`s on this machine (127.0.0.2 and 127.0.0.3). A run
of 20,000 one-file mini-batches whose run() does nothing but return its input (append_row on, so
every row travels to the control plane and back into the output) and the same job with one
mini-batch (the fixed cost: placing the gang, staging, the workers' start and init()). The rate
is the 19,999 extra mini-batches over the extra time, from submit to Completed at the control
plane.

Baseline, measured in the same run: the same 20,000 mini-batches on one node with 4 workers
(`amlnode run`, the scheduler in-process, no network), whose rate is measured the same way. The
ratio says what handing mini-batches out across nodes costs against having them at hand.
"""

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from cluster import LocalCluster, snapshot_with
from common import require_build, verdict
from parallel_run import NOTHING, make_files, run_job

TARGET_RATE = 2000
MINI_BATCHES = 20000


def job_text(data, nodes, workers):
    return ("script: score.py\n"
            "environment:\n  python: {user_managed_dependencies: true, "
            "interpreter_path: /usr/bin/python3}\n"
            f"inputs:\n  data: {{path: '{data}', dataset: file}}\n"
            f"parallel_run: {{mini_batch_size: 1, error_threshold: 0, output_action: append_row, "
            f"process_count_per_node: {workers}, node_count: {nodes}}}\n")


def across_nodes(cluster, data):
    before = time.monotonic()
    run_id = cluster.client.submit(job_text(data, 2, 2), "bench", snapshot_with("score.py", NOTHING),
                                   node_count=2)
    cluster.client.wait_completed(run_id)
    return time.monotonic() - before


def one_node(work, data, name):
    folder = work / name
    folder.mkdir()
    (folder / "score.py").write_text(NOTHING)
    (folder / "job.yml").write_text(job_text(data, 1, 4))
    return run_job(folder / "job.yml", work / f"state-{name}")


def main():
    require_build()
    work = Path(tempfile.mkdtemp(prefix="amlnode-bench-prs-nodes-"))
    many, one = work / "many-data", work / "one-data"
    make_files(many, MINI_BATCHES, "x\n")
    make_files(one, 1, "x\n")
    cluster = LocalCluster(prefix="amlnode-bench-prs-cluster-")
    try:
        cluster.add_agent(address="127.0.0.2")
        cluster.add_agent(address="127.0.0.3")
        cluster.wait_for_lease_poll()
        fixed = min(across_nodes(cluster, one) for _ in range(3))
        total = across_nodes(cluster, many)
        rate = (MINI_BATCHES - 1) / max(total - fixed, 1e-9)
        base_fixed = min(one_node(work, one, f"one-{i}") for i in range(3))
        base_total = one_node(work, many, "many")
        base_rate = (MINI_BATCHES - 1) / max(base_total - base_fixed, 1e-9)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(cluster.work, ignore_errors=True)
    print(f"{MINI_BATCHES:,} one-file mini-batches, 2 agents x 2 workers: {total:6.2f} s "
          f"(one mini-batch {fixed:5.2f} s); {rate:7.0f} mini-batches/s  "
          f"target >= {TARGET_RATE}  {verdict(rate >= TARGET_RATE)}")
    print(f"baseline, one node x 4 workers in-process: {base_total:6.2f} s "
          f"(one mini-batch {base_fixed:5.2f} s); {base_rate:7.0f} mini-batches/s; "
          f"across nodes / one node {rate / base_rate:4.2f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    raise SystemExit(main())
