# A file dataset's entry script: each file's name, prefixed by --prefix, one row per file. It logs
# through EntryScript, prints to stdout, and fails as $FAIL_ON says (a file name to raise on),
# hangs on $HANG_ON, sleeps on $SLOW_ON the first time only (it makes $SLOW_MARKER), and records
# its pid in $PIDS before each mini-batch, and on $WAIT_ON waits until the file $GO exists.
# init() raises with $INIT_FAILS, and on the node rank $INIT_FAILS_ON_RANK names.
import os
import sys
import time

from azureml_user.parallel_run import EntryScript


def init():
    global prefix
    prefix = sys.argv[sys.argv.index("--prefix") + 1]
    if os.environ.get("INIT_FAILS"):
        raise RuntimeError("the model could not be loaded")
    if os.environ.get("INIT_FAILS_ON_RANK", "none") == os.environ.get("AMLNODE_NODE_RANK"):
        raise RuntimeError("this node has no model")
    if os.environ.get("FORK_HELPER"):
        # A helper process forked in init() (as a multiprocessing pool's would be) inherits the
        # worker's pipes and outlives it.
        helper = os.fork()
        if helper == 0:
            time.sleep(600)
            os._exit(0)
        with open(os.environ["FORK_HELPER"], "a") as helpers:
            helpers.write(f"{helper}\n")
    EntryScript().logger.info("init done")
    EntryScript().logger.debug("debug detail")


def run(mini_batch):
    print(f"a mini-batch of {len(mini_batch)}", flush=True)
    if os.environ.get("PIDS"):
        with open(os.environ["PIDS"], "a") as pids:
            pids.write(f"{os.getpid()} {os.path.basename(mini_batch[0])}\n")
    names = [os.path.basename(f) for f in mini_batch]
    if os.environ.get("EMPTY_ON") in names:
        return []
    for name in names:
        if name in os.environ.get("FAIL_ON", "").split(","):
            raise ValueError(f"cannot score {name}")
        if name == os.environ.get("WAIT_ON"):
            while not os.path.exists(os.environ["GO"]):
                time.sleep(0.02)
        if name == os.environ.get("HANG_ON"):
            time.sleep(3600)
        if name == os.environ.get("SLOW_ON") and not os.path.exists(os.environ["SLOW_MARKER"]):
            open(os.environ["SLOW_MARKER"], "w").close()
            time.sleep(3600)
    return [prefix + name for name in names]
