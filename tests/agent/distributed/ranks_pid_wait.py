# Every rank appends "RANK PID" to the file named by $PIDS and then waits, so that a test can kill
# one rank by its pid and see what becomes of the others.
import os
import time

with open(os.environ["PIDS"], "a") as pids:
    pids.write(f"{os.environ['RANK']} {os.getpid()}\n")
print(f"rank {os.environ['RANK']} up", flush=True)
time.sleep(300)
