#!/usr/bin/env python3
"""Issue 2: a job writing 1 GiB to stdout under `amlnode run` takes at most 1.05x the time of the
same command writing to a file directly; peak RSS of amlnode plus its shim stays under 16 MB.

Baseline, measured in the same run: `head -c 1GiB /dev/zero > file` (the same writer, its stdout a
file). Under amlnode the writer's stdout is the run's std_log.txt, and `amlnode run` shows it live
(here its stdout is /dev/null, as for a terminal nobody reads)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import AMLNODE, amlnode_run, best_of, project, require_build, verdict

SIZE = int(os.environ.get("BENCH_BYTES", 1 << 30))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 5))


def vm_hwm_kb(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def run_with_rss(job, state):
    """Runs amlnode and samples the peak RSS (VmHWM) of amlnode and of its shim while they live."""
    proc = subprocess.Popen(
        [str(AMLNODE), "run", "--state-dir", str(state), "--quiet", str(job)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peaks = {"amlnode": 0, "shim": 0}
    shim_pid = None
    while proc.poll() is None:
        peaks["amlnode"] = max(peaks["amlnode"], vm_hwm_kb(proc.pid) or 0)
        if shim_pid is None:
            for shim_json in Path(state, "runs").glob("*/shim.json"):
                try:
                    shim_pid = json.loads(shim_json.read_text())["shim_pid"]
                except (ValueError, KeyError, OSError):
                    pass
        if shim_pid:
            peaks["shim"] = max(peaks["shim"], vm_hwm_kb(shim_pid) or 0)
        time.sleep(0.005)
    return proc.returncode, peaks


def main():
    require_build()
    work = Path(tempfile.mkdtemp(prefix="amlnode-bench-log-"))
    try:
        target = work / "direct.out"

        def direct():
            with open(target, "wb") as out:
                subprocess.run(["head", "-c", str(SIZE), "/dev/zero"], stdout=out, check=True)
            target.unlink()

        folder, job = project(["head", "-c", str(SIZE), "/dev/zero"])
        states = []

        def under_amlnode():
            state = Path(tempfile.mkdtemp(dir=work))
            result = amlnode_run(job, state)
            if result.returncode != 0:
                raise SystemExit(result.stderr.decode())
            log = next(Path(state, "runs").glob("*/user_logs/std_log.txt"))
            assert log.stat().st_size == SIZE, "the log does not hold every byte"
            shutil.rmtree(state)

        # Interleave so that both see the same machine conditions.
        base, ours = [], []
        for _ in range(ROUNDS):
            base.append(best_of(1, direct))
            ours.append(best_of(1, under_amlnode))
        base_t, ours_t = min(base), min(ours)
        ratio = ours_t / base_t

        rss_state = Path(tempfile.mkdtemp(dir=work))
        code, peaks = run_with_rss(job, rss_state)
        total_mb = (peaks["amlnode"] + peaks["shim"]) / 1024

        mib = SIZE / (1 << 20)
        print(f"bytes written:            {SIZE} ({mib:.0f} MiB), best of {ROUNDS}")
        print(f"direct to a file:         {base_t*1000:8.1f} ms")
        print(f"under amlnode run:        {ours_t*1000:8.1f} ms")
        print(f"ratio amlnode/direct:     {ratio:8.3f}   (target <= 1.05)  {verdict(ratio <= 1.05)}")
        print(f"peak RSS amlnode:         {peaks['amlnode']/1024:8.2f} MB")
        print(f"peak RSS shim:            {peaks['shim']/1024:8.2f} MB")
        print(f"peak RSS amlnode + shim:  {total_mb:8.2f} MB  (target < 16 MB)  {verdict(total_mb < 16)}")
        shutil.rmtree(folder)
        return 0 if code == 0 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
