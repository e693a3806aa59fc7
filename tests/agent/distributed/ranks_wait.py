# Every rank says it is up, then waits (for a deadline or a cancel to stop it).
import os
import sys
import time

rank = os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("RANK", "0"))
print(f"rank {rank} up", flush=True)
time.sleep(300)
