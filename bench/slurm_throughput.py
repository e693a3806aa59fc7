#!/usr/bin/env python3
"""Issue 4 target: trivial runs through one agent (run concurrency 8) complete at least 10x as fast
as Debian's Slurm (slurm-wlm, default configuration, one local node) completes
`sbatch --wrap=true`, measured side by side on this machine.

Slurm: a one-node cluster in a temp dir (munged with a generated key on its own socket,
slurmctld and slurmd as root with state, spool, logs and pid files in the temp dir,
ProctrackType=proctrack/linuxproc and TaskPlugin=task/none because there are no cgroups to
delegate here; everything else is Slurm's default). --jobs `sbatch --wrap=true` are submitted one
after another and squeue is polled until none is left.

amlnode: amlnode-controlplane and one `amlnode agent` with run_concurrency 8, the same number of
user-managed jobs running `true`, submitted over the HTTP API (POST /v1/runs, PUT snapshot, as
`amlnode submit` does after packing the folder) and polled until every run is terminal.

Both rates are jobs completed per second from the first submit to the last completion. Needs
slurm-wlm (`apt-get install -y slurm-wlm`, which brings munge) and root, for slurmd.
"""

import argparse
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from cluster import TERMINAL, Client, LocalCluster, empty_snapshot
from common import require_build, verdict

TARGET_RATIO = 10.0
# How often completion is polled, the same for both: rare enough that the polling itself (an
# squeue process, an HTTP request) takes little of the machine, often enough to add under 2% to
# a run of several seconds.
POLL_SECONDS = 0.05


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Slurm:
    """munged + slurmctld + slurmd for one local node, all state in a temp dir."""

    def __init__(self, select):
        for tool in ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue"):
            if not shutil.which(tool):
                raise SystemExit(f"bench: {tool} not found; apt-get install -y slurm-wlm")
        if os.geteuid() != 0:
            raise SystemExit("bench: slurmd needs root")
        self.dir = Path(tempfile.mkdtemp(prefix="amlnode-bench-slurm-"))
        self.procs = []
        munge = self.dir / "munge"
        munge.mkdir(mode=0o700)
        self.socket = munge / "munge.socket"
        subprocess.run(["mungekey", "--create", "--keyfile", str(munge / "munge.key")], check=True)
        os.chmod(munge / "munge.key", 0o600)
        self.procs.append(subprocess.Popen(
            ["munged", "--foreground", "--force", "--key-file", str(munge / "munge.key"),
             "--socket", str(self.socket), "--pid-file", str(munge / "munged.pid"),
             "--log-file", str(munge / "munged.log"), "--seed-file", str(munge / "munged.seed")],
            stdout=subprocess.DEVNULL, stderr=open(munge / "munged.err", "w")))
        self._wait(lambda: self.socket.exists(), "munged")
        for sub in ("state", "spool", "jobs"):
            (self.dir / sub).mkdir()
        self.conf = self.dir / "slurm.conf"
        select_line = "" if select == "default" else (
            "SelectType=select/cons_tres\nSelectTypeParameters=CR_CPU\n")
        self.conf.write_text(
            "ClusterName=bench\n"
            "SlurmctldHost=localhost\n"
            f"SlurmctldPort={free_port()}\nSlurmdPort={free_port()}\n"
            "SlurmUser=root\nSlurmdUser=root\n"
            f"AuthType=auth/munge\nAuthInfo=socket={self.socket}\n"
            f"StateSaveLocation={self.dir / 'state'}\nSlurmdSpoolDir={self.dir / 'spool'}\n"
            f"SlurmctldPidFile={self.dir / 'slurmctld.pid'}\nSlurmdPidFile={self.dir / 'slurmd.pid'}\n"
            f"SlurmctldLogFile={self.dir / 'slurmctld.log'}\nSlurmdLogFile={self.dir / 'slurmd.log'}\n"
            "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n"
            "ReturnToService=2\nMpiDefault=none\n"
            f"{select_line}"
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN\n"
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n")
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(self.conf)], env=self.env,
                                           stdout=subprocess.DEVNULL, stderr=open(self.dir / "slurmctld.err", "w")))
        self.procs.append(subprocess.Popen(["slurmd", "-D", "-N", "localhost", "-f", str(self.conf)], env=self.env,
                                           stdout=subprocess.DEVNULL, stderr=open(self.dir / "slurmd.err", "w")))
        self._wait(self._node_idle, "slurmd to register as idle")

    def _wait(self, ready, what, seconds=60):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if ready():
                return
            for proc in self.procs:
                if proc.poll() is not None:
                    raise SystemExit(f"bench: {proc.args[0]} exited; see {self.dir}")
            time.sleep(0.1)
        raise SystemExit(f"bench: timed out waiting for {what}; see {self.dir}")

    def _node_idle(self):
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.strip() == "idle"

    def queued(self):
        out = subprocess.run(["squeue", "-h", "-o", "%i"], env=self.env, capture_output=True, text=True,
                             check=True)
        return len(out.stdout.split())

    def throughput(self, jobs):
        started = time.perf_counter()
        for _ in range(jobs):
            subprocess.run(["sbatch", "--quiet", "--wrap=true", f"--output={self.dir / 'jobs' / 'slurm-%j.out'}"],
                           env=self.env, check=True, stdout=subprocess.DEVNULL)
        while self.queued():
            time.sleep(POLL_SECONDS)
        return jobs / (time.perf_counter() - started)

    def stop(self):
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def amlnode_throughput(jobs, concurrency):
    cluster = LocalCluster(prefix="amlnode-bench-throughput-")
    try:
        agent, _ = cluster.add_agent(run_concurrency=concurrency)
        cluster.wait_for_lease_poll()
        snapshot = empty_snapshot()
        job = "user_managed: true\nuse_docker: false\ncommand: [\"true\"]\n"
        run_ids = []
        started = time.perf_counter()
        # Submitting on its own connection and thread, as a user would, while this thread polls.
        submitter = threading.Thread(
            target=lambda: run_ids.extend(Client(cluster.port).submit(job, "bench", snapshot)
                                          for _ in range(jobs)))
        submitter.start()
        done = 0
        statuses = {}
        while done < jobs:
            if done < len(run_ids):
                record = cluster.client.run(run_ids[done])
                if record["status"] in TERMINAL:
                    statuses[record["status"]] = statuses.get(record["status"], 0) + 1
                    done += 1
                    continue
            time.sleep(POLL_SECONDS)
        elapsed = time.perf_counter() - started
        submitter.join()
        cpu = cpu_seconds(agent.pid), cpu_seconds(cluster.server.pid)
    finally:
        cluster.stop()
    if statuses.get("Completed", 0) != jobs:
        raise SystemExit(f"bench: not every amlnode run completed: {statuses}")
    return jobs / elapsed, cpu


def cpu_seconds(pid):
    """(own, children's) user + system CPU of a live process, in seconds; children counts the
    waited-for ones (for the agent: the shims and the runs' processes)."""
    fields = [int(value) for value in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:15]]
    tick = os.sysconf("SC_CLK_TCK")
    return (fields[0] + fields[1]) / tick, (fields[2] + fields[3]) / tick


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--slurm-select", choices=["default", "cons_tres"], default="default",
                        help="cons_tres (CR_CPU) lets Slurm run one job per CPU at once")
    args = parser.parse_args()
    require_build()
    slurm = Slurm(args.slurm_select)
    try:
        slurm_rate = slurm.throughput(args.jobs)
    finally:
        slurm.stop()
    aml_rate, ((agent_cpu, shims_cpu), (server_cpu, _)) = amlnode_throughput(args.jobs, args.concurrency)
    ratio = aml_rate / slurm_rate
    print(f"{args.jobs} trivial jobs, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"slurm ({args.slurm_select} select): {slurm_rate:7.1f} jobs/s   (sbatch --wrap=true)")
    print(f"amlnode (concurrency {args.concurrency}):    {aml_rate:7.1f} jobs/s   "
          f"(CPU per run: agent {agent_cpu / args.jobs * 1000:.1f} ms, shim and process "
          f"{shims_cpu / args.jobs * 1000:.1f} ms, "
          f"control plane {server_cpu / args.jobs * 1000:.1f} ms CPU/run)")
    print(f"ratio amlnode/slurm: {ratio:.1f}x (target >= {TARGET_RATIO:.0f}x)  {verdict(ratio >= TARGET_RATIO)}")


if __name__ == "__main__":
    main()
