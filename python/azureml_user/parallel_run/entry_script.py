"""amlnode's stand-in for ParallelRunStep's `azureml_user.parallel_run.entry_script`
(docs/sdk-compat.md).

Provides EntryScript, one instance per process (EntryScript() in init() and in run() is the same
object, as in Azure ML), with:

- logger: a logging.Logger named "ParallelRunStep" writing to
  <logs_dir>/user/entry_script_log/<node>/<process>.log.txt, where <node> is $AZUREML_NODE_RANK
  (else "0") and <process> is $AMLNODE_PRS_PROCESS_NAME, else the run context's process_name,
  else "process000". Lines read "time|name|function()|LEVEL|message"; the level is
  EntryScript(logging_level=...) (a logging level or its name), else the step's
  ParallelRunConfig(logging_level=...) ($AMLNODE_PRS_LOGGING_LEVEL, which amlnode's workers
  get), else INFO, its default. The file is opened without following a link;
- log_dir: <logs_dir>/user; working_dir: the run's working dir; output_dir: the run's outputs
  dir; agent_name: <process>.

Nothing else of ParallelRunStep's runtime is provided.
"""

import logging
import os
import threading

from azureml._amlnode import context as _context
from azureml._amlnode import warn
from azureml._amlnode.artifacts import ArtifactStore

__all__ = ["EntryScript"]

LOG_FORMAT = "%(asctime)s|%(name)s|%(funcName)s()|%(levelname)s|%(message)s"


def _component(value, default, what):
    if value is None or value == "":
        return default
    if "/" in value or "\0" in value or value in (".", ".."):
        warn(f"EntryScript: {what} {value!r} cannot name a folder or file; using {default!r}")
        return default
    return value


class EntryScript:
    """The helper a ParallelRunStep entry script gets its logger from (stand-in)."""

    _instance = None
    _instance_lock = threading.Lock()

    def __new__(cls, *args, **kwargs):
        with cls._instance_lock:
            if cls._instance is None:
                instance = super().__new__(cls)
                instance._logger = None
                instance._logging_level = None
                cls._instance = instance
            return cls._instance

    def __init__(self, logging_level=None):
        if logging_level is not None and self._logger is None:
            self._logging_level = logging_level

    @property
    def _names(self):
        context = _context.load()
        node = _component(os.environ.get("AZUREML_NODE_RANK"), "0", "$AZUREML_NODE_RANK")
        process = _component(os.environ.get("AMLNODE_PRS_PROCESS_NAME") or context.process_name,
                             "process000", "the process name")
        return context, node, process

    @property
    def logger(self):
        """A logger writing to logs/user/entry_script_log/<node>/<process>.log.txt."""
        with self._instance_lock:
            if self._logger is None:
                self._logger = self._make_logger()
            return self._logger

    def _make_logger(self):
        context, node, process = self._names
        level = self._logging_level
        if level is None:
            level = os.environ.get("AMLNODE_PRS_LOGGING_LEVEL") or logging.INFO
        if isinstance(level, str):
            level = logging.getLevelName(level.upper())
            if not isinstance(level, int):
                level = logging.INFO
        logger = logging.getLogger("ParallelRunStep")
        logger.setLevel(level)
        logger.propagate = False
        store = ArtifactStore(context.outputs_dir, context.logs_dir)
        try:
            fd = store.open_append(f"logs/user/entry_script_log/{node}/{process}.log.txt")
        except Exception as error:  # the logger must work even where its file cannot
            warn(f"EntryScript: cannot open its log file under {context.logs_dir}: {error}; "
                 "logging to stderr")
            handler = logging.StreamHandler()
        else:
            handler = logging.StreamHandler(os.fdopen(fd, "a", encoding="utf-8", buffering=1))
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
        return logger

    @property
    def log_dir(self):
        """The folder of the user's logs: <logs_dir>/user."""
        return os.path.join(_context.load().logs_dir, "user")

    @property
    def working_dir(self):
        return _context.load().working_dir

    @property
    def output_dir(self):
        """The run's outputs folder, which the run keeps."""
        return _context.load().outputs_dir

    @property
    def agent_name(self):
        return self._names[2]
