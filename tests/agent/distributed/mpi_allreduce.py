# Four ranks under the agent's mpirun: every rank adds its rank + 1 (an allreduce, so 10 for 4),
# and says what Open MPI told it about itself.
import os

from mpi4py import MPI

comm = MPI.COMM_WORLD
total = comm.allreduce(comm.Get_rank() + 1, op=MPI.SUM)
print(f"rank {comm.Get_rank()} of {comm.Get_size()}"
      f" local {os.environ['OMPI_COMM_WORLD_LOCAL_RANK']}/{os.environ['OMPI_COMM_WORLD_LOCAL_SIZE']}"
      f" sum {total}", flush=True)
