"""Tags, properties and the script's status, for amlnode's stand-in for the Azure ML SDK v1.

Tags and properties are appended to the run's tags file (<run>/system_logs/tags.jsonl), one JSON
object a line: {"kind": "tag"|"property", "name": str, "value": str|null, "time": unix seconds},
with "run_id" added for those set on the parent run (Run.parent). Reading them back replays the
file's lines (its first 1 MiB) and then what this process could not write there; the last value
of a name wins. The file stops growing at 1 MiB: later tags are kept in this process only, with
one warning. Without a tags file (an offline run, or no $AMLNODE_METRICS_FILE) they are kept in
the process only.

Run.fail() writes the status file (<run>/system_logs/script_status.json) atomically (a temporary
file, fsynced, renamed over it): {"status": "Failed", "error": {"code": str, "message": str}}.
"""

import json
import os
import threading
import time

from azureml._amlnode import warn

MAX_TAGS_FILE_BYTES = 1 << 20
MAX_TAG_LINE_BYTES = 64 << 10
MAX_ERROR_MESSAGE_CHARS = 64 << 10


class TagStore:
    """The tags and properties of a run (and of its parent), in the tags file and this process."""

    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()
        self._unwritten = []

    def append(self, kind, name, value, run_id=None):
        record = {"kind": kind, "name": name, "value": value, "time": time.time()}
        if run_id is not None:
            record["run_id"] = run_id
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
        if len(line) > MAX_TAG_LINE_BYTES:
            raise ValueError(f"{kind} {name!r} takes {len(line)} bytes; the limit is "
                             f"{MAX_TAG_LINE_BYTES}")
        with self._lock:
            if not self._write(line):
                self._unwritten.append(record)

    def _write(self, line):
        if not self.path:
            return False
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                         | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
        except OSError as error:
            warn(f"cannot write tags and properties to {self.path}: {error.strerror}; they are "
                 "kept in this process only")
            return False
        try:
            if os.fstat(fd).st_size + len(line) > MAX_TAGS_FILE_BYTES:
                warn(f"{self.path} reached {MAX_TAGS_FILE_BYTES} bytes; later tags and "
                     "properties are kept in this process only")
                return False
            os.write(fd, line)
            return True
        finally:
            os.close(fd)

    def current(self, kind, run_id=None):
        """{name: value} of one kind for the run (run_id None) or for its parent (run_id)."""
        values = {}
        with self._lock:
            for record in self._read() + self._unwritten:
                if record.get("kind") == kind and record.get("run_id") == run_id:
                    values[record["name"]] = record.get("value")
        return values

    def _read(self):
        if not self.path:
            return []
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return []
        with os.fdopen(fd, "rb") as file:
            data = file.read(MAX_TAGS_FILE_BYTES)
        records = []
        for line in data.split(b"\n")[:-1]:  # a last line without its newline is not whole yet
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("name"), str):
                records.append(record)
        return records


def write_status(path, status):
    """Writes the status file atomically: a temporary file beside it, fsynced, then renamed."""
    folder = os.path.dirname(path)
    temp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{time.monotonic_ns()}")
    data = (json.dumps(status, separators=(",", ":")) + "\n").encode("utf-8")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def read_status(path):
    """The status file's "status", or None."""
    if not path:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        data = file.read(MAX_ERROR_MESSAGE_CHARS * 4 + 4096)
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value.get("status") if isinstance(value, dict) else None
