#!/usr/bin/env python3
"""Issue 2: `amlnode run` of a trivial job adds at most 15 ms over running the command directly.

Measured with hyperfine side by side in the same run: `true` directly, and `amlnode run` of a job
whose command is `true` (each run gets a fresh run id in one state dir)."""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import AMLNODE, project, require_build, verdict

RUNS = 200


def main():
    require_build()
    if not shutil.which("hyperfine"):
        raise SystemExit("bench: hyperfine not found (apt-get install hyperfine)")
    folder, job = project(["true"])
    state = Path(tempfile.mkdtemp(prefix="amlnode-bench-state-"))
    export = folder / "hyperfine.json"
    ours = f"{AMLNODE} run --quiet --state-dir {state} {job}"
    # `amlnode --version` shows how much of the run is the executable's own start-up.
    subprocess.run(
        ["hyperfine", "-N", "--warmup", "20", "--runs", str(RUNS), "--export-json", str(export),
         "-n", "direct", "true", "-n", "amlnode --version", f"{AMLNODE} --version",
         "-n", "amlnode run", ours],
        check=True, stdout=subprocess.DEVNULL)
    results = {r["command"]: r for r in json.loads(export.read_text())["results"]}
    direct, startup, amlnode = (results[name] for name in ("direct", "amlnode --version", "amlnode run"))
    added_ms = (amlnode["median"] - direct["median"]) * 1000
    print(f"direct `true`:        median {direct['median']*1000:7.2f} ms  mean {direct['mean']*1000:7.2f} ms")
    print(f"amlnode --version:    median {startup['median']*1000:7.2f} ms  mean {startup['mean']*1000:7.2f} ms")
    print(f"amlnode run `true`:   median {amlnode['median']*1000:7.2f} ms  mean {amlnode['mean']*1000:7.2f} ms")
    print(f"ratio amlnode/direct: {amlnode['median']/direct['median']:7.1f}x")
    print(f"added by amlnode run: median {added_ms:7.2f} ms  (target <= 15 ms)  {verdict(added_ms <= 15)}")
    shutil.rmtree(folder)
    shutil.rmtree(state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
