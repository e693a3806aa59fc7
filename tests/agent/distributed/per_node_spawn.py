# The per-node launch form: one process per node (process_count equal to the node count) that
# starts its own workers, as a `torch.distributed.launch` command or a torch.multiprocessing.spawn
# script does on Azure ML. The workers' global ranks come from NODE_RANK, and they meet at
# MASTER_ADDR:MASTER_PORT as the launcher was told. With "hold" after the marker, each worker
# writes its pid to outputs/ and waits, for a test that cancels the run.
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORKERS_PER_NODE = 2


def worker(local_rank, node_rank, nodes, hold):
    world = WORKERS_PER_NODE * nodes
    rank = node_rank * WORKERS_PER_NODE + local_rank
    dist.init_process_group("gloo", init_method="env://", world_size=world, rank=rank)
    total = torch.tensor([rank + 1])
    dist.all_reduce(total)
    # One write per line: the workers share the launcher's stdout.
    sys.stdout.write(f"worker {rank}/{world} sum {int(total)}\n")
    sys.stdout.flush()
    if hold:
        with open(f"outputs/worker_{rank}.pid", "w") as f:
            f.write(str(os.getpid()))
        time.sleep(300)
    dist.destroy_process_group()


if __name__ == "__main__":
    node_rank = int(os.environ["NODE_RANK"])
    nodes = int(os.environ["WORLD_SIZE"])  # one launcher per node
    hold = sys.argv[2:] == ["hold"]
    print(f"launcher {sys.argv[1]} node {node_rank}/{nodes} "
          f"master {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}", flush=True)
    mp.spawn(worker, args=(node_rank, nodes, hold), nprocs=WORKERS_PER_NODE)
