# Rank 2 fails while every other rank ignores SIGTERM and blocks (in an MPI barrier when under
# mpirun, else in a sleep): the run must end with all of them gone within the grace period.
import os
import signal
import sys
import time

rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("RANK", "0")))
if rank == 2:
    time.sleep(0.5)
    print("rank 2 gives up", flush=True)
    sys.exit(3)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "OMPI_COMM_WORLD_RANK" in os.environ:
    from mpi4py import MPI
    MPI.COMM_WORLD.Barrier()
time.sleep(300)
