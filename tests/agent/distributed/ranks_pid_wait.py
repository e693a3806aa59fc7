# Every rank appends "RANK PID" to the file named by $PIDS and then waits, so that a test can kill
# one rank by its pid and see what becomes of the others. The rank is PyTorch's RANK, or under
# mpirun Open MPI's OMPI_COMM_WORLD_RANK.
import os
import time

rank = os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("RANK"))
with open(os.environ["PIDS"], "a") as pids:
    pids.write(f"{rank} {os.getpid()}\n")
print(f"rank {rank} up", flush=True)
time.sleep(300)
