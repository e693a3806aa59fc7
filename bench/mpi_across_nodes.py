#!/usr/bin/env python3
"""Issue 13 target: an MPI run of 4 ranks over 2 nodes, against mpirun with an SSH launcher.

Ours: a control plane and two `amlnode agent`s on this machine (at 127.0.0.2 and 127.0.0.3),
idle with their lease long polls waiting. Each round submits an mpi4py hello (an allreduce) with
`distributed_job_config: {type: mpi, process_count_per_node: 2, node_count: 2}`; mpirun on the
master's node starts Open MPI's daemon on the other through the agents (amlnode mpi-rsh, the
control plane, amlnode mpi-host). The round's time is from just before the submit to the run
Completed at the control plane: everything a user waits for.

Baseline, measured in the same run, rounds interleaved: what a user without amlnode runs by
hand, `mpirun -np 4 --host localhost:2,127.0.0.3:2` of the same script with Open MPI's default
SSH launcher, against an sshd (openssh-server) the benchmark starts on 127.0.0.3 with keys it
makes. Target: median ratio ours / baseline <= 1.0.

Needs openmpi-bin, python3-mpi4py and openssh-server (scripts/setup installs them); runs as the
user sshd lets in (root here).
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from cluster import LocalCluster, snapshot_with
from common import percentile, require_build, verdict

TARGET_RATIO = 1.0
SSHD = "/usr/sbin/sshd"
HELLO = """from mpi4py import MPI
comm = MPI.COMM_WORLD
total = comm.allreduce(comm.Get_rank(), op=MPI.SUM)
print(f"rank {comm.Get_rank()} of {comm.Get_size()}: {total}", flush=True)
"""
JOB = ("script: hello.py\n"
       "environment:\n  python: {user_managed_dependencies: true, "
       "interpreter_path: /usr/bin/python3}\n"
       "distributed_job_config: {type: mpi, process_count_per_node: 2, node_count: 2}\n")


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Sshd:
    """An sshd on 127.0.0.3 that lets this user in with a key made here, and an ssh config for
    Open MPI's launcher. Its sessions keep Open MPI's shared-memory files in a folder of their
    own: this "node" shares its host name with the other, and the files are named after it."""

    def __init__(self, work):
        self.work = work
        for key in ("host_key", "user_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / key)],
                           check=True)
        shutil.copy(work / "user_key.pub", work / "authorized_keys")
        (work / "shm").mkdir()
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
        self.port = free_port("127.0.0.3")
        (work / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.3\nHostKey {work / 'host_key'}\n"
            f"PidFile {work / 'sshd.pid'}\nAuthorizedKeysFile {work / 'authorized_keys'}\n"
            "StrictModes no\nPermitRootLogin yes\nPasswordAuthentication no\nUsePAM no\n"
            "Subsystem sftp internal-sftp\n"
            f"SetEnv OMPI_MCA_btl_vader_backing_directory={work / 'shm'}\n")
        (work / "ssh_config").write_text(
            f"Host 127.0.0.3\n  Port {self.port}\n  IdentityFile {work / 'user_key'}\n"
            "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  BatchMode yes\n"
            "  LogLevel ERROR\n")
        self.process = subprocess.Popen([SSHD, "-D", "-f", str(work / "sshd_config"),
                                         "-E", str(work / "sshd.log")])
        for _ in range(500):
            try:
                socket.create_connection(("127.0.0.3", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.01)
        raise SystemExit("bench: sshd did not start: " + (work / "sshd.log").read_text())

    def stop(self):
        self.process.terminate()
        self.process.wait()


def baseline_round(sshd, script):
    before = time.monotonic()
    done = subprocess.run(
        ["mpirun", "--allow-run-as-root", "-np", "4", "--host", "localhost:2,127.0.0.3:2",
         "--oversubscribe", "--bind-to", "none", "--mca", "plm_rsh_agent",
         f"ssh -F {sshd.work / 'ssh_config'}", "--mca", "btl_vader_single_copy_mechanism",
         "none", "/usr/bin/python3", str(script)],
        capture_output=True, text=True, cwd=script.parent)
    took = (time.monotonic() - before) * 1000
    if done.returncode != 0 or done.stdout.count("of 4: 6") != 4:
        raise SystemExit(f"bench: mpirun over ssh failed ({done.returncode}): "
                         f"{done.stdout}{done.stderr}")
    return took


def our_round(cluster, snapshot):
    before = time.monotonic()
    run_id = cluster.client.submit(JOB, "bench", snapshot, node_count=2)
    cluster.client.wait_completed(run_id)
    took = (time.monotonic() - before) * 1000
    for rank in range(4):
        text = cluster.client.log(run_id, f"user_logs/std_log_process_{rank:02d}.txt").decode()
        if text != f"rank {rank} of 4: 6\n":
            raise SystemExit(f"bench: run {run_id} rank {rank} said {text!r}")
    return took


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    require_build()
    if not os.path.exists(SSHD):
        raise SystemExit("bench: needs openssh-server (scripts/setup installs it)")
    work = Path(tempfile.mkdtemp(prefix="amlnode-bench-mpi-ssh-"))
    script = work / "hello.py"
    script.write_text(HELLO)
    sshd = Sshd(work)
    cluster = LocalCluster(prefix="amlnode-bench-mpi-")
    try:
        cluster.add_agent(address="127.0.0.2")
        cluster.add_agent(address="127.0.0.3")
        cluster.wait_for_lease_poll()
        snapshot = snapshot_with("hello.py", HELLO)
        our_round(cluster, snapshot)  # warm-up, both sides
        baseline_round(sshd, script)
        ours, base = [], []
        for _ in range(args.rounds):
            time.sleep(0.1)  # idle again: both agents' long polls are waiting at the server
            ours.append(our_round(cluster, snapshot))
            base.append(baseline_round(sshd, script))
    finally:
        cluster.stop()
        sshd.stop()
        shutil.rmtree(work, ignore_errors=True)
    ours_p50, base_p50 = statistics.median(ours), statistics.median(base)
    ratio = ours_p50 / base_p50
    print(f"baseline: mpirun over ssh (loopback sshd), 4 ranks on 2 hosts  p50 {base_p50:6.1f} ms  "
          f"p90 {percentile(base, 0.9):6.1f} ms")
    print(f"amlnode: submit -> Completed, 2 nodes x 2 MPI ranks        p50 {ours_p50:6.1f} ms  "
          f"p90 {percentile(ours, 0.9):6.1f} ms")
    print(f"ratio ours / baseline {ratio:5.2f}  target <= {TARGET_RATIO:.1f}  "
          f"{verdict(ratio <= TARGET_RATIO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
