"""The run context of amlnode's stand-in for the Azure ML SDK v1: what the agent tells the run.

The agent writes a JSON file before the run starts and sets $AMLNODE_RUN_CONTEXT to its path
(docs/sdk-compat.md, "The run context file"). Every field is optional and checked: a field of the
wrong type is ignored (one warning names them all), and a file over 1 MiB, unreadable or not a JSON
object is ignored as a whole (one warning). What the file does not give comes from the environment
every amlnode run has (docs/running.md):

  run_id          AZUREML_RUN_ID
  experiment      AZUREML_ARM_PROJECT_NAME
  working_dir     AZ_BATCHAI_JOB_WORK_DIR, else the current directory
  outputs_dir     <working_dir>/outputs
  logs_dir        AZUREML_LOGDIRECTORY_PATH, else <working_dir>/logs
  metrics_file    AMLNODE_METRICS_FILE
  tags_file       tags.jsonl beside the metrics file (<run>/system_logs/)
  status_file     script_status.json beside the metrics file
  input_datasets  without a context file: AZUREML_DATAREFERENCE_<name>, each as a file dataset
  node_count      AZUREML_NODE_COUNT, else 1

Without a run id from either, Run.get_context() gives an offline run.
"""

import json
import os
import stat
import threading

from azureml._amlnode import warn

CONTEXT_ENV = "AMLNODE_RUN_CONTEXT"
METRICS_ENV = "AMLNODE_METRICS_FILE"
MAX_CONTEXT_BYTES = 1 << 20
TABULAR_FORMATS = ("delimited", "json_lines", "parquet")
# The options of a delimited tabular dataset the stand-in reads, and the JSON type of each.
DELIMITED_OPTIONS = {"separator": str, "header": (bool, str), "encoding": str,
                     "infer_column_types": bool, "empty_as_string": bool}


class DatasetDecl:
    """One declared input dataset: kind "file" or "tabular", its path, and how to read a tabular one."""

    __slots__ = ("name", "kind", "path", "format", "options", "id")

    def __init__(self, name, kind, path, format=None, options=None, id=None):
        self.name, self.kind, self.path = name, kind, path
        self.format, self.options, self.id = format, dict(options or {}), id


class ModelDecl:
    """One declared model: where it lies, and its version when the job gave one."""

    __slots__ = ("name", "path", "version")

    def __init__(self, name, path, version=None):
        self.name, self.path, self.version = name, path, version


class RunContext:
    """The validated context of this run (the file's fields, else their fallbacks)."""

    def __init__(self):
        self.source = None  # the context file's path when one was read
        self.run_id = None
        self.experiment = None
        self.parent_run_id = None
        self.working_dir = None
        self.outputs_dir = None
        self.logs_dir = None
        self.metrics_file = None
        self.tags_file = None
        self.status_file = None
        self.input_datasets = {}
        self.models = {}
        self.node_count = 1
        self.process_name = None
        self.target = None
        self.start_time_utc = None


def _is_text(value):
    return isinstance(value, str) and value != "" and "\0" not in value


def _is_abs_path(value):
    return _is_text(value) and os.path.isabs(value)


def _read_context_file(path):
    """The file's JSON object, or None (with one warning) when it cannot be used."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as error:
        warn(f"cannot read the run context ${CONTEXT_ENV}={path}: {error.strerror}; "
             "using the environment instead")
        return None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            warn(f"the run context ${CONTEXT_ENV}={path} is not a regular file; it is ignored")
            return None
        data = file.read(MAX_CONTEXT_BYTES + 1)
    if len(data) > MAX_CONTEXT_BYTES:
        warn(f"the run context {path} is larger than {MAX_CONTEXT_BYTES} bytes; it is ignored")
        return None
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        warn(f"the run context {path} is not valid JSON ({error}); it is ignored")
        return None
    if not isinstance(value, dict):
        warn(f"the run context {path} is not a JSON object; it is ignored")
        return None
    return value


def _datasets(value, bad):
    if not isinstance(value, dict):
        bad.append("input_datasets")
        return {}
    datasets = {}
    for name, entry in value.items():
        where = f"input_datasets.{name}"
        if not _is_text(name) or not isinstance(entry, dict):
            bad.append(where)
            continue
        kind, path = entry.get("kind"), entry.get("path")
        if kind not in ("file", "tabular") or not _is_abs_path(path):
            bad.append(where)
            continue
        dataset_id = entry.get("id")
        if dataset_id is not None and not _is_text(dataset_id):
            bad.append(where + ".id")
            dataset_id = None
        if kind == "file":
            datasets[name] = DatasetDecl(name, kind, path, id=dataset_id)
            continue
        format = entry.get("format", "delimited")
        if format not in TABULAR_FORMATS:
            bad.append(where + ".format")
            continue
        options = entry.get("options") or {}
        if not isinstance(options, dict):
            bad.append(where + ".options")
            options = {}
        kept = {}
        for key, option in options.items():
            expected = DELIMITED_OPTIONS.get(key)
            if expected is None:
                continue  # an option the stand-in does not read: not an error
            if not isinstance(option, expected) or (key == "separator" and option == ""):
                bad.append(f"{where}.options.{key}")
                continue
            kept[key] = option
        datasets[name] = DatasetDecl(name, kind, path, format, kept, dataset_id)
    return datasets


def _models(value, bad):
    if not isinstance(value, dict):
        bad.append("models")
        return {}
    models = {}
    for name, entry in value.items():
        where = f"models.{name}"
        if not _is_text(name) or not isinstance(entry, dict) or not _is_abs_path(entry.get("path")):
            bad.append(where)
            continue
        version = entry.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            bad.append(where + ".version")
            version = None
        models[name] = ModelDecl(name, entry["path"], version)
    return models


def _from_file(context, data, path):
    bad = []

    def text(key, check=_is_text):
        value = data.get(key)
        if value is None:
            return None
        if check(value):
            return value
        bad.append(key)
        return None

    context.source = path
    context.run_id = text("run_id")
    context.experiment = text("experiment")
    context.parent_run_id = text("parent_run_id")
    for key in ("working_dir", "outputs_dir", "logs_dir", "metrics_file", "tags_file",
                "status_file"):
        setattr(context, key, text(key, _is_abs_path))
    context.process_name = text("process_name")
    context.target = text("target")
    context.start_time_utc = text("start_time_utc")
    if "input_datasets" in data and data["input_datasets"] is not None:
        context.input_datasets = _datasets(data["input_datasets"], bad)
    if "models" in data and data["models"] is not None:
        context.models = _models(data["models"], bad)
    node_count = data.get("node_count")
    if node_count is not None:
        if isinstance(node_count, bool) or not isinstance(node_count, int) or node_count < 1:
            bad.append("node_count")
        else:
            context.node_count = node_count
    if bad:
        warn(f"the run context {path} has fields of the wrong type or shape, ignored: "
             f"{', '.join(bad)}")


def _env_abs_path(name):
    value = os.environ.get(name)
    return value if _is_abs_path(value) else None


def _fill_from_environment(context, from_file):
    env = os.environ
    context.run_id = context.run_id or (env.get("AZUREML_RUN_ID") or None)
    context.experiment = context.experiment or (env.get("AZUREML_ARM_PROJECT_NAME") or None)
    context.working_dir = (context.working_dir or _env_abs_path("AZ_BATCHAI_JOB_WORK_DIR")
                           or os.getcwd())
    context.outputs_dir = context.outputs_dir or os.path.join(context.working_dir, "outputs")
    context.logs_dir = (context.logs_dir or _env_abs_path("AZUREML_LOGDIRECTORY_PATH")
                        or os.path.join(context.working_dir, "logs"))
    if context.metrics_file and not env.get(METRICS_ENV):
        # amlnode_run writes where $AMLNODE_METRICS_FILE says; the context names the same file.
        env[METRICS_ENV] = context.metrics_file
    context.metrics_file = context.metrics_file or _env_abs_path(METRICS_ENV)
    if context.metrics_file:
        system_logs = os.path.dirname(context.metrics_file)
        context.tags_file = context.tags_file or os.path.join(system_logs, "tags.jsonl")
        context.status_file = context.status_file or os.path.join(system_logs,
                                                                  "script_status.json")
    if not from_file:
        count = env.get("AZUREML_NODE_COUNT", "")
        if count.isdigit() and int(count) >= 1:
            context.node_count = int(count)
        prefix = "AZUREML_DATAREFERENCE_"
        for key in sorted(env):
            name, path = key[len(prefix):], env[key]
            if key.startswith(prefix) and name and _is_abs_path(path):
                context.input_datasets[name] = DatasetDecl(name, "file", path)


_lock = threading.Lock()
_cached = None


def load():
    """This process's run context, read once."""
    global _cached
    with _lock:
        if _cached is None:
            context = RunContext()
            path = os.environ.get(CONTEXT_ENV)
            data = _read_context_file(path) if path else None
            if data is not None:
                _from_file(context, data, path)
            _fill_from_environment(context, data is not None)
            _cached = context
        return _cached
