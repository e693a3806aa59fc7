# What a TensorFlow parameter-server job does with TF_CONFIG, without TensorFlow: every task
# listens on its own address from the cluster spec, and each worker connects to every parameter
# server and says who it is; a parameter server ends once every worker has reported.
import json
import os
import socket
import time

config = json.loads(os.environ["TF_CONFIG"])
cluster, task = config["cluster"], config["task"]
me = cluster[task["type"]][task["index"]]


def split(address):
    host, port = address.rsplit(":", 1)
    return host, int(port)


if task["type"] == "ps":
    server = socket.create_server(split(me))
    seen = []
    while len(seen) < len(cluster["worker"]):
        conn, _ = server.accept()
        seen.append(conn.recv(100).decode())
        conn.close()
    print(f"ps {task['index']} at {me} heard {sorted(seen)}", flush=True)
else:
    for ps in cluster.get("ps", []):
        for _ in range(200):
            try:
                with socket.create_connection(split(ps)) as conn:
                    conn.sendall(f"worker{task['index']}".encode())
                break
            except OSError:
                time.sleep(0.05)
    print(f"worker {task['index']} at {me} of {len(cluster['worker'])} workers, "
          f"ps {cluster.get('ps')} environment {config['environment']}", flush=True)
