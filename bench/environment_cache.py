#!/usr/bin/env python3
"""Issue 3: on a cache hit, preparing an already-built environment (pip, or Docker) takes under
50 ms.

Each job runs once to build its environment, then ROUNDS more times on the cache. The Preparing
phase of each run comes from its run.json (`durations.preparing_ms`), which covers the snapshot,
inputs and the environment. The baseline, measured in the same run, is the Preparing phase of a
user-managed job (no environment to prepare), so the difference is what the cache hit costs.

The Docker part needs the test services (scripts/test-services start, as root); without them it is
skipped and says so."""

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import AMLNODE, ROOT, require_build, verdict

ROUNDS = 15
SERVICES = Path("/run/amlnode-test/services.env")


def preparing_ms(job, state, config, run_id):
    result = subprocess.run(
        [str(AMLNODE), "run", "--quiet", "--config", str(config), "--state-dir", str(state),
         "--run-id", run_id, str(job)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if result.returncode != 0:
        raise SystemExit(f"bench: {run_id} failed: {result.stderr.decode()[-2000:]}")
    record = json.loads((state / "runs" / run_id / "run.json").read_text())
    return record["durations"]["preparing_ms"]


def median_preparing(name, job, state, config):
    preparing_ms(job, state, config, f"{name}-warm")  # builds (or pulls) once
    return statistics.median(preparing_ms(job, state, config, f"{name}-{i}") for i in range(ROUNDS))


def main():
    require_build()
    work = Path(tempfile.mkdtemp(prefix="amlnode-bench-env-"))
    wheels = work / "wheels"
    subprocess.run([sys.executable, str(ROOT / "tests/executors/environments/make_wheel.py"),
                    str(wheels), "bench_pkg", "1.0"], check=True)
    services = dict(line.split("=", 1) for line in SERVICES.read_text().splitlines()) if SERVICES.exists() else None
    config = work / "config.yml"
    config_text = f"environments:\n  pip_args: [--no-index, --find-links, {wheels}]\n"
    if services:
        config_text += f"docker:\n  host: {services['AMLNODE_TEST_DOCKER_HOST']}\n"
    config.write_text(config_text)
    project = work / "project"
    project.mkdir()
    (project / "train.py").write_text("print('x')\n")
    jobs = {
        "user-managed": "entry_script: train.py\nuser_managed: true\nuse_docker: false\n",
        "pip": "entry_script: train.py\nuse_docker: false\npip_packages: [bench_pkg==1.0]\n",
    }
    if services:
        jobs["docker"] = (f"entry_script: train.py\nuse_docker: true\nuser_managed: true\n"
                          f"custom_docker_image: {services['AMLNODE_TEST_BASE_IMAGE']}\n"
                          "environment_variables: {BENCH: environment-cache}\n")
    results = {}
    for name, text in jobs.items():
        job = project / f"{name}.yml"
        job.write_text(text)
        results[name] = median_preparing(name, job, work / "state", config)
    base = results["user-managed"]
    print(f"Preparing phase, median of {ROUNDS} runs on a warm cache:")
    print(f"  user-managed (baseline, nothing to prepare): {base:6.1f} ms")
    ok = True
    for name in ("pip", "docker"):
        if name not in results:
            print(f"  {name}: skipped (no test services: scripts/test-services start)")
            continue
        added = results[name] - base
        ok = ok and results[name] < 50
        print(f"  {name:6} cache hit: {results[name]:6.1f} ms  (+{added:5.1f} ms over the baseline; "
              f"target < 50 ms)  {verdict(results[name] < 50)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
