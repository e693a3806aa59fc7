#!/usr/bin/env python3
"""Issue 3: starting a container for a run (create + start + first output) is no slower than
`docker run --rm` with the same image and command, measured side by side (ratio <= 1.0).

Both sides run `echo hi` in the test base image (already present, nothing to build) to completion,
container removed: `amlnode run` of a Docker job against `docker run --rm --init` (amlnode also
runs docker-init as PID 1). hyperfine interleaves nothing, so each side gets the same warm-up and
is measured over the same number of runs. Needs the test services (scripts/test-services start)."""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import AMLNODE, require_build, verdict

SERVICES = Path("/run/amlnode-test/services.env")
RUNS = 20


def main():
    require_build()
    if not SERVICES.exists():
        raise SystemExit("bench: start the test services first: scripts/test-services start")
    services = dict(line.split("=", 1) for line in SERVICES.read_text().splitlines())
    host, image = services["AMLNODE_TEST_DOCKER_HOST"], services["AMLNODE_TEST_BASE_IMAGE"]
    work = Path(tempfile.mkdtemp(prefix="amlnode-bench-container-"))
    (work / "project").mkdir()
    job = work / "project" / "job.yml"
    job.write_text(f"use_docker: true\nuser_managed: true\ncustom_docker_image: {image}\ncommand: [echo, hi]\n")
    config = work / "config.yml"
    config.write_text(f"docker:\n  host: {host}\n")
    export = work / "hyperfine.json"
    ours = f"{AMLNODE} run --quiet --config {config} --state-dir {work}/state {job}"
    theirs = f"docker -H {host} run --rm --init {image} echo hi"
    subprocess.run(["hyperfine", "-N", "--warmup", "3", "--runs", str(RUNS), "--export-json", str(export),
                    "-n", "docker run --rm", theirs, "-n", "amlnode run", ours],
                   check=True, stdout=subprocess.DEVNULL)
    results = {r["command"]: r for r in json.loads(export.read_text())["results"]}
    docker_run, amlnode = results["docker run --rm"], results["amlnode run"]
    ratio = amlnode["median"] / docker_run["median"]
    print(f"docker run --rm --init:  median {docker_run['median']*1000:7.1f} ms")
    print(f"amlnode run (Docker):    median {amlnode['median']*1000:7.1f} ms")
    print(f"ratio amlnode/docker:    {ratio:7.2f}  (target <= 1.0)  {verdict(ratio <= 1.0)}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
