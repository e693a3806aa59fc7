"""amlnode's ParallelRunStep worker (docs/parallel-run.md); see worker.py."""
