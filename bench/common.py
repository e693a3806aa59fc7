"""Shared helpers for the benchmarks: where the binaries are, temp projects, timing."""

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AMLNODE = Path(os.environ.get("AMLNODE", ROOT / "build" / "bin" / "amlnode"))


def require_build():
    if not AMLNODE.exists():
        raise SystemExit(f"bench: {AMLNODE} not found; run scripts/setup first")


def project(command, extra=""):
    """A temporary project folder with a user-managed job running `command` (a list, joined into one shell line as the SDK joins it, or a shell line)."""
    folder = Path(tempfile.mkdtemp(prefix="amlnode-bench-"))
    job = folder / "job.yml"
    job.write_text(
        "experiment_name: bench\nuser_managed: true\nuse_docker: false\n"
        f"command: {json.dumps(command)}\n{extra}"
    )
    return folder, job


def amlnode_run(job, state_dir, *flags, stdout=subprocess.DEVNULL):
    return subprocess.run(
        [str(AMLNODE), "run", "--state-dir", str(state_dir), "--quiet", *flags, str(job)],
        stdout=stdout,
        stderr=subprocess.PIPE,
        check=False,
    )


def best_of(n, fn):
    """Runs fn n times; returns the smallest wall time in seconds (the least disturbed run)."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def verdict(ok):
    return "PASS" if ok else "FAIL"


def percentile(values, fraction):
    """The value at `fraction` (0 to 1) of the sorted values, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]
