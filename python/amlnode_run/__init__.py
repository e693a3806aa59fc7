"""Log metrics from a script that amlnode runs.

    import amlnode_run
    amlnode_run.log("loss", 0.25, step=10)
    amlnode_run.log_list("accuracies", [0.5, 0.7, 0.8])
    amlnode_run.log_row("confusion", tp=10, fp=2)
    amlnode_run.log_table("curve", {"x": [1, 2, 3], "y": [0.5, 0.7, 0.8]})
    amlnode_run.flush()

The calls mirror Azure ML's Run.log, Run.log_list, Run.log_row and Run.log_table (a `description`
is accepted and kept). Numbers may be numpy scalars and lists numpy arrays (or anything with a
`tolist()`, such as a pandas Series): they are duck-typed, numpy is never imported here. The
`azureml` package beside this one (amlnode's stand-in for the Azure ML SDK v1, docs/sdk-compat.md)
writes its run.log calls through this module. Each record is one JSON line appended to the file named by $AMLNODE_METRICS_FILE, which
amlnode sets for every run (<run folder>/system_logs/metrics.jsonl); the agent ships that file to
the control plane like the run's logs. Pure Python, standard library only.

Buffering and its bounds:
- Records are buffered in memory and written in one append when 1000 records or 1 MiB are
  waiting, when a call comes 1 s or more after the last write, on flush(), and at interpreter exit.
  A record larger than 1 MiB is refused with ValueError.
- flush() also fsyncs the file, so what was logged before it survives a crash of the machine.
  Records logged after the last write are lost if the process is killed (SIGKILL, or a signal
  Python does not turn into an exception): at most 1 s or 1000 records.
- The file is capped at 256 MiB; past that, one record of kind "truncated" is written and later
  records are dropped, with one warning on stderr.
- Without $AMLNODE_METRICS_FILE (the script runs outside amlnode) the calls still check their
  arguments, then drop the record: nothing is buffered, and one warning goes to stderr.
- A process forked after logging (a DataLoader worker) starts with an empty buffer, so no record
  is written twice; its own records are appended to the same file.
"""

import atexit
import json
import math
import numbers
import os
import sys
import threading
import time

__all__ = ["log", "log_list", "log_row", "log_table", "flush", "ENV_VAR"]

ENV_VAR = "AMLNODE_METRICS_FILE"
MAX_BUFFERED_RECORDS = 1000
MAX_BUFFERED_BYTES = 1 << 20
MAX_RECORD_BYTES = 1 << 20
FLUSH_INTERVAL_SECONDS = 1.0
MAX_FILE_BYTES = 256 << 20
MAX_NAME_LENGTH = 255


def _check_name(name):
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str, got {type(name).__name__}")
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"name: expected 1 to {MAX_NAME_LENGTH} characters, got {len(name)}")
    if any(ord(c) < 32 for c in name):
        raise ValueError(f"name: control characters are not allowed: {name!r}")


def _scalar(value, field):
    """A JSON-safe scalar: numbers, strings and booleans; NaN and infinities as strings.

    numpy scalars (np.float32, np.int64, np.bool_, a 0-d array) are taken through their `item()`,
    found by duck typing, so numpy is never imported here.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if _is_numpy_scalar(value):
        return _scalar(value.item(), field)
    raise TypeError(f"{field}: expected a number, str or bool, got {type(value).__name__}")


def _is_numpy_scalar(value):
    # np.generic and 0-d arrays: a dtype, an item(), and no dimensions. item() of one of them is a
    # Python scalar, never another numpy object, so _scalar recurses at most once.
    return (hasattr(value, "dtype") and callable(getattr(value, "item", None))
            and getattr(value, "ndim", None) == 0)


def _values(value, field):
    """A list of JSON-safe scalars from a list, tuple, numpy array, pandas Series or Index."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and not isinstance(value, (str, bytes)):
        value = tolist()
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{field}: expected a list of values, got {type(value).__name__}")
    return [_scalar(v, f"{field}[{i}]") for i, v in enumerate(value)]


class _Writer:
    def __init__(self):
        self._lock = threading.Lock()
        self._lines = []
        self._bytes = 0
        self._pid = os.getpid()
        self._fd = None
        self._written = 0
        self._last_write = time.monotonic()
        self._full = False
        self._warned = False

    def add(self, record):
        line = json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n"
        data = line.encode("utf-8")
        if len(data) > MAX_RECORD_BYTES:
            raise ValueError(f"record for {record['name']!r} is {len(data)} bytes; the limit is "
                             f"{MAX_RECORD_BYTES}")
        path = os.environ.get(ENV_VAR)
        with self._lock:
            if not path:
                self._warn(f"amlnode_run: ${ENV_VAR} is not set; metrics are not recorded")
                return
            self._after_fork()
            self._lines.append(data)
            self._bytes += len(data)
            due = time.monotonic() - self._last_write >= FLUSH_INTERVAL_SECONDS
            if due or len(self._lines) >= MAX_BUFFERED_RECORDS or self._bytes >= MAX_BUFFERED_BYTES:
                self._write(path)

    def flush(self, sync=True):
        path = os.environ.get(ENV_VAR)
        with self._lock:
            if not path:
                return
            self._after_fork()
            self._write(path)
            if sync and self._fd is not None:
                os.fsync(self._fd)

    def _after_fork(self):
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._lines, self._bytes, self._fd = [], 0, None

    def _open(self, path):
        if self._fd is None:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._written = os.fstat(self._fd).st_size
        return self._fd

    def _write(self, path):
        lines, self._lines, self._bytes = self._lines, [], 0
        self._last_write = time.monotonic()
        if not lines or self._full:
            return
        fd = self._open(path)
        data = b"".join(lines)
        if self._written + len(data) > MAX_FILE_BYTES:
            self._full = True
            data = (json.dumps({"kind": "truncated", "name": "", "time": time.time(),
                                "reason": f"the metrics file reached {MAX_FILE_BYTES} bytes"})
                    + "\n").encode()
            self._warn(f"amlnode_run: {path} reached {MAX_FILE_BYTES} bytes; later metrics "
                       "are dropped")
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        self._written += len(data)

    def _warn(self, message):
        if not self._warned:
            self._warned = True
            print(message, file=sys.stderr)


_writer = _Writer()
atexit.register(lambda: _writer.flush(sync=True))


def _record(name, kind, description, **fields):
    _check_name(name)
    record = {"name": name, "kind": kind, "time": time.time()}
    if description:
        record["description"] = str(description)
    record.update(fields)
    _writer.add(record)


# The fields of each kind, checked and converted; the azureml stand-in builds its records with them.

def _scalar_fields(value, step):
    if _is_numpy_scalar(step):
        step = step.item()
    if step is not None and (isinstance(step, bool) or not isinstance(step, numbers.Integral)
                             or step < 0):
        raise ValueError(f"step: expected an int >= 0 or None, got {step!r}")
    fields = {"value": _scalar(value, "value")}
    if step is not None:
        fields["step"] = int(step)
    return fields


def _list_fields(value):
    return {"values": _values(value, "value")}


def _row_fields(kwargs):
    if not kwargs:
        raise ValueError("log_row: give at least one column, e.g. log_row(name, loss=0.1)")
    return {"row": {str(k): _scalar(v, k) for k, v in kwargs.items()}}


def _table_fields(value):
    if not hasattr(value, "items") or not callable(value.items):
        raise TypeError(f"value: expected a dict of column name -> list of values, got "
                        f"{type(value).__name__}")
    table = {}
    for column, values in value.items():
        if not isinstance(column, str):
            raise TypeError(f"value: column names must be str, got {type(column).__name__}")
        table[column] = _values(values, f"value[{column!r}]")
    if not table:
        raise ValueError("log_table: give at least one column, e.g. log_table(name, {'x': [1, 2]})")
    return {"table": table}


def log(name, value, description="", step=None):
    """Logs one value (a number, str or bool) under `name`, at `step` when given (an int >= 0)."""
    _record(name, "scalar", description, **_scalar_fields(value, step))


def log_list(name, value, description=""):
    """Logs a list of values (a list, tuple, numpy array, pandas Series) under `name`, as one record."""
    _record(name, "list", description, **_list_fields(value))


def log_row(name, description=None, **kwargs):
    """Logs a row of named values (log_row("metrics", loss=0.1, acc=0.9)) under `name`."""
    _record(name, "row", description, **_row_fields(kwargs))


def log_table(name, value, description=""):
    """Logs a table, a dict of column name -> list of values, under `name`, as one record:
    {"kind": "table", "table": {"x": [1, 2], "y": [0.5, 0.7]}}."""
    _record(name, "table", description, **_table_fields(value))


def flush():
    """Writes what is buffered and fsyncs the file, so it survives a crash of the machine."""
    _writer.flush(sync=True)
