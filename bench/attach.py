#!/usr/bin/env python3
"""Issue 15 target: `amlnode attach` of a loopback host, the agent already built, in under 10 s to
a registered node, with the time of each step.

The host is this machine, reached through an sshd the benchmark starts on 127.0.0.3 (root logs in
with a key made here), against a control plane of its own (cluster.LocalCluster). Each round
attaches (upload, install, start, registration), then detaches with --purge, so the next starts
from a bare host. As attach installs the agent here (/usr/local, /etc/amlnode, /var/lib/amlnode),
it runs only as root on a machine with no agent installed, as tests/agent/attach_test.cc does.

Baseline, measured in the same run, rounds interleaved: what the same transfer costs with
OpenSSH by hand: `scp` of the same files (the binaries, the Python module, the install script)
to the host and one `ssh` running install.sh there, with no registration. The ratio says what
amlnode adds to the copy a user would make anyway.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster import LocalCluster, USER
from common import AMLNODE, require_build, verdict
from mpi_across_nodes import Sshd

TARGET_SECONDS = 10.0
ROUNDS = 3
SHARE = AMLNODE.parent.parent / "share" / "amlnode"
BINARIES = ["amlnode", "amlnode-shim", "amlnode-parallel-node"]


def attach_round(cluster, sshd, command):
    env = dict(os.environ, AMLNODE_CONTROL_PLANE=f"http://127.0.0.1:{cluster.port}",
               AMLNODE_USER_TOKEN=USER)
    common = ["127.0.0.3", "--port", str(sshd.port), "--compute", "bench", "--username", "root",
              "--private-key-file", str(sshd.work / "user_key"), "--known-hosts",
              str(sshd.work / "known_hosts"), "--json"]
    before = time.monotonic()
    done = subprocess.run([str(AMLNODE), command, *common, "--accept-new-host-key"]
                          if command == "attach" else [str(AMLNODE), command, *common, "--purge"],
                          capture_output=True, text=True, env=env)
    took = time.monotonic() - before
    if done.returncode != 0:
        raise SystemExit(f"bench: {command} failed: {done.stderr}")
    return took, json.loads(done.stdout)


def baseline_round(sshd, stage):
    ssh = ["-F", str(sshd.work / "ssh_config")]
    before = time.monotonic()
    subprocess.run(["ssh", *ssh, "root@127.0.0.3", "rm -rf /tmp/bench-stage && mkdir -p "
                    "/tmp/bench-stage"], check=True)
    subprocess.run(["scp", "-q", "-r", *ssh, *[str(p) for p in stage.iterdir()],
                    "root@127.0.0.3:/tmp/bench-stage/"], check=True)
    subprocess.run(["ssh", *ssh, "root@127.0.0.3",
                    "sh /tmp/bench-stage/systemd/install.sh --from /tmp/bench-stage/bin "
                    "--no-enable >/dev/null && rm -rf /tmp/bench-stage"], check=True)
    took = time.monotonic() - before
    subprocess.run(["sh", str(SHARE / "systemd" / "install.sh"), "--uninstall", "--purge"],
                   capture_output=True)
    return took


def main():
    require_build()
    if os.geteuid() != 0 or Path("/etc/amlnode").exists() or Path("/run/systemd/system").exists():
        print("bench: attach.py needs root on a machine with no agent installed and no systemd")
        return 0
    work = Path(tempfile.mkdtemp(prefix="amlnode-bench-attach-"))
    stage = work / "stage"
    (stage / "bin").mkdir(parents=True)
    for name in BINARIES:
        shutil.copy(AMLNODE.parent / name, stage / "bin" / name)
    shutil.copytree(SHARE / "python", stage / "python")
    shutil.copytree(SHARE / "systemd", stage / "systemd")
    sshd_dir = work / "sshd"
    sshd_dir.mkdir()
    sshd, cluster = None, None
    ours, base, steps = [], [], {}
    try:
        sshd = Sshd(sshd_dir)
        cluster = LocalCluster(prefix="amlnode-bench-attach-cluster-")
        for _ in range(ROUNDS):
            took, report = attach_round(cluster, sshd, "attach")
            ours.append(took)
            for step in report["steps"]:
                steps.setdefault(step["step"], []).append(step["seconds"])
            attach_round(cluster, sshd, "detach")
            base.append(baseline_round(sshd, stage))
    finally:
        # An agent a failed round left running goes first (only if it is the installed one).
        subprocess.run(["sh", "-c", "p=$(cat /run/amlnode/agent.pid 2>/dev/null) || exit 0; "
                        "case \"$(readlink /proc/$p/exe)\" in /usr/local/bin/amlnode*) kill -9 $p ;; "
                        "esac"], capture_output=True)
        subprocess.run(["sh", str(SHARE / "systemd" / "install.sh"), "--uninstall", "--purge"],
                       capture_output=True)
        shutil.rmtree("/usr/local/share/amlnode", ignore_errors=True)
        shutil.rmtree("/run/amlnode", ignore_errors=True)
        if cluster:
            cluster.stop()
        if sshd:
            sshd.stop()
        shutil.rmtree(work, ignore_errors=True)
    median = statistics.median(ours)
    print("per step (median of %d): %s" % (ROUNDS, ", ".join(
        f"{name} {statistics.median(values):.2f} s" for name, values in steps.items())))
    print(f"amlnode attach, loopback host to a registered node: median {median:5.2f} s  "
          f"target < {TARGET_SECONDS:.0f} s  {verdict(median < TARGET_SECONDS)}")
    print(f"baseline, scp of the same files and ssh install.sh: median "
          f"{statistics.median(base):5.2f} s; ours / baseline {median / statistics.median(base):4.2f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    raise SystemExit(main())
