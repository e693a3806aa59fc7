# Rank 0 of an MPI run across nodes asks the agent's rsh agent to start a command on nodes that
# hold no share of the run (every address in ADDRESSES not in AZ_BATCH_HOST_LIST, and one no node
# has) and on its own node, and prints how each ended. None may start anything.
import os
import subprocess

from mpi4py import MPI

comm = MPI.COMM_WORLD
if comm.Get_rank() == 0:
    shares = os.environ["AZ_BATCH_HOST_LIST"].split(",")
    others = [a for a in os.environ["ADDRESSES"].split(",") if a not in shares]
    for host in others + ["127.0.0.99", shares[0]]:
        marker = os.path.join(os.environ["MARKERS"], host)
        done = subprocess.run([os.environ["AMLNODE"], "mpi-rsh", host, "touch", marker],
                              capture_output=True, text=True)
        print(f"{host} exit {done.returncode}: {done.stderr.strip()}", flush=True)
comm.Barrier()
