# One DistributedDataParallel training step over the gloo backend: each rank feeds different data,
# and after backward() every rank must hold the same (averaged) gradients.
import os

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
model = torch.nn.Linear(4, 1)
ddp = torch.nn.parallel.DistributedDataParallel(model)
ddp(torch.randn(8, 4) * (rank + 1)).sum().backward()
grads = [torch.zeros_like(model.weight.grad) for _ in range(world)]
dist.all_gather(grads, model.weight.grad)
agree = all(torch.allclose(grads[0], g) for g in grads)
print(f"rank {rank}/{world} local {os.environ['LOCAL_RANK']} node {os.environ['NODE_RANK']}"
      f" master {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} grads_agree {agree}",
      flush=True)
dist.destroy_process_group()
