#!/usr/bin/env python3
"""Issue 14 targets for a ParallelRunStep on one node (`amlnode run`, 2 workers):

1. Overhead per mini-batch <= 2 ms per worker: 20,000 one-file mini-batches whose run() does
   nothing but return its input, append_row on. The overhead is the run's wall time less the same
   job's with one mini-batch (the fixed cost: the agent, the workers' start, init()), times the
   workers, per mini-batch.
2. On 10,000 small CSV files (a file dataset, 10 files to a mini-batch) with a real pandas run()
   (read each file, sum a column), throughput >= 0.8x of a multiprocessing.Pool of the same 2
   workers calling the same run() on the same mini-batches in one process tree, no scheduler,
   measured in the same run (the Pool's initializer calls init(), as a worker does).

Needs python3-pandas (scripts/setup installs it).
"""

import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import AMLNODE, require_build, verdict

PYTHON = "/usr/bin/python3"
WORKERS = 2
TARGET_OVERHEAD_MS = 2.0
TARGET_RATIO = 0.8

NOTHING = """def init():
    pass


def run(mini_batch):
    return mini_batch
"""

PANDAS = """import pandas


def init():
    pass


def run(mini_batch):
    return [f"{p} {pandas.read_csv(p)['value'].sum()}" for p in mini_batch]
"""


def job(folder, script, files_per_batch):
    """The job in `folder`; its data in `folder`-data, outside the snapshot."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "score.py").write_text(script)
    (folder / "job.yml").write_text(
        "script: score.py\n"
        f"environment:\n  python: {{user_managed_dependencies: true, interpreter_path: {PYTHON}}}\n"
        f"inputs:\n  data: {{path: '{folder}-data', dataset: file}}\n"
        f"parallel_run:\n  mini_batch_size: {files_per_batch}\n  error_threshold: 0\n"
        f"  output_action: append_row\n  process_count_per_node: {WORKERS}\n")
    return folder / "job.yml"


def run_job(job_file, state):
    before = time.monotonic()
    done = subprocess.run([str(AMLNODE), "run", "--state-dir", str(state), str(job_file)],
                          capture_output=True, text=True)
    took = time.monotonic() - before
    if done.returncode != 0:
        raise SystemExit(f"bench: the run failed: {done.stdout}{done.stderr}")
    return took


def make_files(folder, count, text):
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"f{i:05d}.csv").write_text(text)


def overhead(work):
    big = work / "many"
    make_files(work / "many-data", 20000, "x\n")
    one = work / "one"
    make_files(work / "one-data", 1, "x\n")
    fixed = min(run_job(job(one, NOTHING, 1), work / "state-one") for _ in range(3))
    total = run_job(job(big, NOTHING, 1), work / "state-many")
    per_batch_ms = (total - fixed) * WORKERS / 20000 * 1000
    print(f"20,000 one-file mini-batches, {WORKERS} workers: {total:6.2f} s; one mini-batch "
          f"{fixed:5.2f} s; overhead per mini-batch per worker {per_batch_ms:5.2f} ms  "
          f"target <= {TARGET_OVERHEAD_MS:.0f} ms  {verdict(per_batch_ms <= TARGET_OVERHEAD_MS)}")


def pool_init():
    import pandas  # noqa: F401  (as the worker's import of the entry script)


def pool_run(mini_batch):
    import pandas
    return [f"{p} {pandas.read_csv(p)['value'].sum()}" for p in mini_batch]


def throughput(work):
    folder = work / "csv"
    make_files(work / "csv-data", 10000, "value\n1\n2\n3\n")
    files = sorted(str(p) for p in (work / "csv-data").iterdir())
    batches = [files[i:i + 10] for i in range(0, len(files), 10)]
    ours = run_job(job(folder, PANDAS, 10), work / "state-csv")
    before = time.monotonic()
    with multiprocessing.get_context("fork").Pool(WORKERS, initializer=pool_init) as pool:
        rows = sum(len(r) for r in pool.imap(pool_run, batches))
    base = time.monotonic() - before
    assert rows == 10000
    ratio = base / ours
    print(f"10,000 CSV files with pandas, {WORKERS} workers: amlnode {ours:6.2f} s, "
          f"multiprocessing.Pool {base:6.2f} s; throughput ratio {ratio:4.2f}  "
          f"target >= {TARGET_RATIO}  {verdict(ratio >= TARGET_RATIO)}")


def main():
    require_build()
    work = Path(tempfile.mkdtemp(prefix="amlnode-bench-prs-"))
    try:
        overhead(work)
        throughput(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    raise SystemExit(main())
