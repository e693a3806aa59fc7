"""A real control plane and real agents on loopback, for the daemon benchmarks.

`LocalCluster` starts `amlnode-controlplane` with a fresh data dir and a known user token, and
`add_agent()` starts `amlnode agent` processes registered to it. Runs are submitted straight over
the HTTP API (POST /v1/runs, then PUT the snapshot), the way `amlnode submit` does it, so a
benchmark measures the control plane and the agent rather than the client's own start-up.
"""

import http.client
import io
import json
import os
import re
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from common import AMLNODE

CONTROLPLANE = Path(os.environ.get("AMLNODE_CONTROLPLANE", AMLNODE.parent / "amlnode-controlplane"))
USER = "bench-user-token"
TERMINAL = {"Completed", "Failed", "Canceled"}


def empty_snapshot():
    """A tar.gz with nothing in it: the snapshot of an empty source directory."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz"):
        pass
    return out.getvalue()


def snapshot_with(name, text):
    """A tar.gz holding one file, `name`, with `text` in it: the snapshot of a one-script job."""
    out = io.BytesIO()
    data = text.encode()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class Client:
    """One kept-alive HTTP/1.1 connection to the control plane."""

    def __init__(self, port, token=USER):
        self.port = port
        self.token = token
        self.conn = None

    def call(self, method, target, body=None, headers=None):
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            try:
                self.conn.request(method, target, body=body,
                                  headers={"Authorization": f"Bearer {self.token}", **(headers or {})})
                answer = self.conn.getresponse()
                data = answer.read()
                if answer.getheader("Connection", "").lower() == "close":
                    self.close()
                return answer.status, data
            except (ConnectionError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def json(self, method, target, payload=None):
        status, data = self.call(method, target, None if payload is None else json.dumps(payload),
                                 {"Content-Type": "application/json"})
        return status, (json.loads(data) if data else None)

    def close(self):
        if self.conn:
            self.conn.close()
            self.conn = None

    def submit(self, job_text, compute, snapshot, experiment="bench", node_count=1):
        """Creates the run and uploads its snapshot (which queues it); returns the run id. A
        node_count above 1 makes a run across nodes."""
        request = {"job": {"text": job_text, "file_name": "job.yml"},
                   "experiment_name": experiment, "compute_name": compute}
        if node_count > 1:
            request["node_count"] = node_count
        status, body = self.json("POST", "/v1/runs", request)
        if status != 201:
            raise SystemExit(f"bench: submit answered {status}: {body}")
        run_id = body["run_id"]
        status, data = self.call("PUT", f"/v1/runs/{run_id}/snapshot", snapshot,
                                 {"Content-Type": "application/gzip"})
        if status != 200:
            raise SystemExit(f"bench: snapshot upload answered {status}: {data!r}")
        return run_id

    def run(self, run_id):
        status, body = self.json("GET", f"/v1/runs/{run_id}")
        if status != 200:
            raise SystemExit(f"bench: GET run answered {status}: {body}")
        return body

    def wait_completed(self, run_id):
        """Polls the run until it is terminal; exits the benchmark unless it Completed."""
        while True:
            record = self.run(run_id)
            if record["status"] in TERMINAL:
                break
            time.sleep(0.005)
        if record["status"] != "Completed":
            raise SystemExit(f"bench: run {run_id} ended {record['status']}: {record.get('error')}")
        return record

    def log(self, run_id, stream="user_logs/std_log.txt"):
        status, data = self.call("GET", f"/v1/runs/{run_id}/logs/{stream}")
        return data if status == 200 else b""


class LocalCluster:
    def __init__(self, prefix="amlnode-bench-cluster-", server_flags=()):
        self.work = Path(tempfile.mkdtemp(prefix=prefix))
        self.agents = []
        out = open(self.work / "cp.out", "w+")
        self.server = subprocess.Popen(
            [str(CONTROLPLANE), "--listen", "127.0.0.1:0", "--data-dir", str(self.work / "cp"),
             "--user-token", USER, *server_flags], stdout=out, stderr=subprocess.STDOUT)
        for _ in range(1000):
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", (self.work / "cp.out").read_text())
            if match:
                self.port = int(match.group(1))
                break
            if self.server.poll() is not None:
                raise SystemExit("bench: the control plane exited: " + (self.work / "cp.out").read_text())
            time.sleep(0.01)
        else:
            raise SystemExit("bench: the control plane did not start")
        self.client = Client(self.port)

    def add_agent(self, compute="bench", run_concurrency=1, lease_wait=20, extra_config="",
                  address=None):
        """Starts an agent and waits until it has registered; returns (process, state dir).
        `address`: what its peers in a run across nodes reach it on (node.address)."""
        index = len(self.agents)
        status, body = self.client.json("POST", "/v1/registration-tokens", {"compute_name": compute})
        if status != 201:
            raise SystemExit(f"bench: registration token answered {status}")
        state = self.work / f"agent{index}"
        config = self.work / f"agent{index}.yml"
        config.write_text(
            f"state_dir: {state}\n"
            f"control_plane: {{url: 'http://127.0.0.1:{self.port}', registration_token: {body['token']}}}\n"
            f"node: {{labels: {{compute_name: {compute}}}, run_concurrency: {run_concurrency}, "
            f"lease_wait_seconds: {lease_wait}" + (f", address: '{address}'" if address else "") + "}\n"
            # Metrics stay on, on a port of the kernel's choosing, so agents side by side (and an
            # agent already on this machine) never fight over 9108.
            f"metrics: {{listen: '127.0.0.1:0'}}\n{extra_config}")
        agent = subprocess.Popen([str(AMLNODE), "agent", "--config", str(config)],
                                 stdout=open(self.work / f"agent{index}.out", "w"), stderr=subprocess.STDOUT)
        self.agents.append(agent)
        for _ in range(1000):
            status, nodes = self.client.json("GET", "/v1/nodes")
            if status == 200 and len(nodes) > index:
                return agent, state
            if agent.poll() is not None:
                raise SystemExit("bench: the agent exited: " + (self.work / f"agent{index}.out").read_text())
            time.sleep(0.01)
        raise SystemExit("bench: the agent did not register")

    def wait_for_lease_poll(self, seconds=0.3):
        """Gives a fresh agent time to have its long-poll lease waiting at the server."""
        time.sleep(seconds)

    def stop(self):
        self.client.close()
        for agent in self.agents:
            if agent.poll() is None:
                agent.terminate()
        for agent in self.agents:
            # The first SIGTERM drains (waits for held runs); a second one stops the agent at once.
            try:
                agent.wait(timeout=2)
            except subprocess.TimeoutExpired:
                agent.terminate()
                try:
                    agent.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    agent.kill()
        self.server.terminate()
        try:
            self.server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.server.kill()
