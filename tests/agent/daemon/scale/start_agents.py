#!/usr/bin/env python3
"""A scale hook for the tests (docs/compute.md, "Scaling"): it plays the cloud on this machine.

The control plane runs it with its decision as JSON on stdin. For every node the cluster lacks it
asks the control plane for a registration token and starts a real `amlnode agent` in the
background, with a state folder of its own; nodes to remove have left by themselves (their agents
exit 0 once removed), so it only records them. Every call is appended to calls.jsonl.

Usage: start_agents.py FOLDER, where FOLDER/settings.json holds the control plane's URL, the user
token and the amlnode binary.
"""
import json
import os
import subprocess
import sys
import urllib.request

folder = sys.argv[1]
request = json.load(sys.stdin)
with open(os.path.join(folder, "settings.json")) as f:
    settings = json.load(f)
with open(os.path.join(folder, "calls.jsonl"), "a") as f:
    f.write(json.dumps(request) + "\n")

started = [name for name in os.listdir(folder) if name.startswith("agent-")]
missing = request["target_node_count"] - request["current_node_count"]
for index in range(len(started), len(started) + max(0, missing)):
    call = urllib.request.Request(
        settings["url"] + "/v1/registration-tokens",
        data=json.dumps({"compute_name": request["compute"]}).encode(),
        headers={"Authorization": "Bearer " + settings["user_token"],
                 "Content-Type": "application/json"},
        method="POST")
    token = json.load(urllib.request.urlopen(call))["token"]
    home = os.path.join(folder, "agent-%d" % index)
    os.makedirs(home)
    config = os.path.join(home, "config.yml")
    with open(config, "w") as f:
        f.write("state_dir: %s/state\ncontrol_plane:\n  url: %s\n  registration_token: %s\n"
                "node:\n  labels: {compute_name: %s}\n  lease_wait_seconds: 2\n"
                "metrics: {listen: '127.0.0.1:0'}\n"
                % (home, settings["url"], token, request["compute"]))
    with open(os.path.join(home, "output.txt"), "w") as out:
        agent = subprocess.Popen([settings["amlnode"], "agent", "--config", config],
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    with open(os.path.join(home, "pid"), "w") as f:
        f.write(str(agent.pid))
