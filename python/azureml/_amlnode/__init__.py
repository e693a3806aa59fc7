"""Internals of amlnode's stand-in for the Azure ML SDK v1 (not part of the SDK's surface).

- context: the run context file the agent writes ($AMLNODE_RUN_CONTEXT), with its fallbacks;
- artifacts: artifact names and writing them under the working dir without following links;
- records: tags and properties (tags.jsonl) and the script's status (script_status.json).

docs/sdk-compat.md describes the contract these implement.
"""

import sys

DOCS = "docs/sdk-compat.md"

_warned = set()


def warn(message):
    """One line on stderr, once per process for each distinct message."""
    if message not in _warned:
        _warned.add(message)
        print(f"azureml (amlnode stand-in): {message}", file=sys.stderr)


def not_provided(what, why="it needs Azure, which a run on an amlnode node does not reach"):
    """The error for SDK calls the stand-in does not provide."""
    return NotImplementedError(
        f"{what} is not provided by amlnode's stand-in for the Azure ML SDK v1: {why}. "
        f"See {DOCS} for what is provided.")
