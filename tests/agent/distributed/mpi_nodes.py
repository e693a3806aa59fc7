# An MPI run across nodes: every rank adds its rank + 1 (an allreduce, so 10 for 4 ranks) and says
# what Open MPI told it, whether its node is the master, and which agent's folder it runs in (the
# test's agents keep their state under <test dir>/n<k>/state).
import os

from mpi4py import MPI

comm = MPI.COMM_WORLD
total = comm.allreduce(comm.Get_rank() + 1, op=MPI.SUM)
agent = os.getcwd().split("/state/")[0].rsplit("/", 1)[-1]
print(f"rank {comm.Get_rank()} of {comm.Get_size()}"
      f" local {os.environ['OMPI_COMM_WORLD_LOCAL_RANK']}/{os.environ['OMPI_COMM_WORLD_LOCAL_SIZE']}"
      f" sum {total} master {os.environ['AZ_BATCH_IS_CURRENT_NODE_MASTER']} agent {agent}",
      flush=True)
