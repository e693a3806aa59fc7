# Every rank says it is up and records its start, waits for the file named by $GO, then says it is
# done: an agent restarted in between must find every rank again and report the run once.
import os
import sys
import time

rank = os.environ.get("RANK", "?")
with open(os.environ["STARTS"], "a") as starts:
    starts.write(f"rank {rank}\n")
print(f"rank {rank} up", flush=True)
while not os.path.exists(os.environ["GO"]):
    time.sleep(0.05)
print(f"rank {rank} done", flush=True)
