"""amlnode's stand-in for the Azure ML SDK v1's `azureml.core.run` (docs/sdk-compat.md).

Provides the Run a training script gets from Run.get_context(), backed by what the run has on
its amlnode node instead of Azure's run history:

- metrics: log, log_list, log_row, log_table, log_image, log_confusion_matrix append records to
  the run's metrics file through the amlnode_run module ($AMLNODE_METRICS_FILE,
  <run>/system_logs/metrics.jsonl), which `amlnode metrics`, the agent's /metrics and the control
  plane read (docs/metrics.md). numpy scalars and arrays are accepted wherever the SDK takes
  numbers or lists;
- tags and properties: tag, set_tags, get_tags, add_properties, get_properties
  (<run>/system_logs/tags.jsonl);
- artifacts: upload_file, upload_files, upload_folder, get_file_names, and the image of
  log_image, written under the run's ./outputs and ./logs, which the agent keeps;
- the run: id, experiment (name, workspace), parent, input_datasets, get_status, get_details,
  complete, fail (which makes the agent end the run Failed), flush;
- child runs made inside the script (create_children, child_run): their metrics and tags go to
  the run's own files, each record carrying the child's "run_id" (<run id>_<n>); the agent keeps
  no record of its own for them, and child.fail() fails only the child (in this process);
- Run.get_context(allow_offline=True): the run; outside one (no $AZUREML_RUN_ID and no run
  context), an offline run, as the SDK's _OfflineRun: its log calls print a notice and record
  nothing; with allow_offline=False, RunEnvironmentException as in the SDK.

Not provided, since they need Azure or a run history: Run(experiment, run_id), Run.get,
register_model, download_file(s), submit_child (a child that is a run of its own),
get_metrics, get_children, wait_for_completion, cancel, log_accuracy_table, log_residuals,
log_predictions, ... They raise NotImplementedError (methods) or AttributeError (other names),
naming docs/sdk-compat.md.
"""

import io
import os
import sys
import threading
import uuid

import amlnode_run
from azureml._amlnode import DOCS, not_provided, warn
from azureml._amlnode import context as _context
from azureml._amlnode import records as _records
from azureml._amlnode.artifacts import ArtifactStore, parse_name
from azureml.exceptions import RunEnvironmentException, UserErrorException

__all__ = ["Run"]

# The first bytes of the image formats log_image takes from a path (the SDK refuses other files).
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM",
                b"II*\x00", b"MM\x00*")


class _Session:
    """What the run and its parent's handle share in this process."""

    def __init__(self, context):
        self.context = context
        self.artifacts = ArtifactStore(context.outputs_dir, context.logs_dir)
        self.tags = _records.TagStore(context.tags_file)
        self.failed = False
        self.lock = threading.Lock()
        self.children = 0  # child runs made so far, for their ids


_lock = threading.Lock()
_current = None


class Run:
    """The run this script is part of (amlnode's stand-in for azureml.core.Run)."""

    def __init__(self, experiment=None, run_id=None, outputs=None, **kwargs):
        session = kwargs.pop("_amlnode_session", None)
        if session is None:
            raise not_provided("Run(experiment, run_id)", "it fetches a run from Azure's run "
                               "history; in a run's script use Run.get_context()")
        self._session = session
        self._experiment = experiment
        self._run_id = run_id
        self._is_parent = kwargs.pop("_amlnode_is_parent", False)
        # A child run made by this script (create_children, child_run): the run it belongs to.
        self._child_of = kwargs.pop("_amlnode_child_of", None)
        self._child_status = "Running"
        self._input_datasets = None

    # Getting the run.

    @classmethod
    def get_context(cls, allow_offline=True, used_for_context_manager=False, **kwargs):
        """The run of this script; outside a run, an offline run (or RunEnvironmentException
        when allow_offline is False)."""
        global _current
        with _lock:
            if _current is None:
                context = _context.load()
                if context.run_id is None:
                    if not allow_offline:
                        raise RunEnvironmentException()
                    return _OfflineRun()
                from azureml.core.experiment import Experiment
                from azureml.core.workspace import Workspace
                experiment = Experiment(Workspace._of_run(), context.experiment or "amlnode")
                _current = cls(experiment, context.run_id, _amlnode_session=_Session(context))
            return _current

    @staticmethod
    def get(workspace, run_id):
        raise not_provided("Run.get(workspace, run_id)")

    # What the run is.

    @property
    def id(self):
        return self._run_id

    @property
    def experiment(self):
        return self._experiment

    @property
    def parent(self):
        """The parent run (a pipeline's run for a step), when the agent declares one; else None."""
        if self._is_parent:
            return None
        if self._child_of is not None:
            return self._child_of
        parent_id = self._session.context.parent_run_id
        if parent_id is None:
            return None
        return Run(self._experiment, parent_id, _amlnode_session=self._session,
                   _amlnode_is_parent=True)

    @property
    def input_datasets(self):
        """{name: path} for file datasets and {name: TabularDataset} for tabular ones."""
        if self._is_parent or self._child_of is not None:
            return {}
        if self._input_datasets is None:
            from azureml.core.dataset import TabularDataset
            datasets = {}
            for name, decl in self._session.context.input_datasets.items():
                datasets[name] = TabularDataset._of(decl) if decl.kind == "tabular" else decl.path
            self._input_datasets = datasets
        return self._input_datasets

    @property
    def tags(self):
        return self.get_tags()

    @property
    def properties(self):
        return self.get_properties()

    @property
    def status(self):
        return self.get_status()

    def get_status(self):
        """"Running", or "Failed" once run.fail() was called (by this process or another). A child
        run made here: "Running", then "Completed" or "Failed" once complete() or fail() ends it.
        """
        if self._is_parent:
            return "Running"
        if self._child_of is not None:
            return self._child_status
        if self._session.failed or _records.read_status(
                self._session.context.status_file) == "Failed":
            return "Failed"
        return "Running"

    def get_details(self):
        """A dict shaped like the SDK's run details."""
        context = self._session.context
        details = {"runId": self._run_id, "target": context.target or "local",
                   "status": self.get_status(),
                   "startTimeUtc": None if self._own_record() else context.start_time_utc,
                   "properties": self.get_properties(), "inputDatasets": [],
                   "outputDatasets": [], "runDefinition": {}, "logFiles": {}}
        if not self._own_record():
            for name, decl in sorted(context.input_datasets.items()):
                details["inputDatasets"].append({
                    "dataset": {"name": name, "id": decl.id or name, "kind": decl.kind,
                                "path": decl.path},
                    "consumptionDetails": {"type": "RunInput", "inputName": name,
                                           "mechanism": "Direct" if decl.kind == "tabular"
                                           else "Mount"}})
            details["runDefinition"] = {
                "script": os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else None,
                "arguments": list(sys.argv[1:]), "target": context.target or "local",
                "nodeCount": context.node_count}
        return details

    # Metrics.

    def _own_record(self):
        """Whether this handle's records carry its run id: the parent's, and a child run's."""
        return self._is_parent or self._child_of is not None

    def _emit(self, kind, name, description, fields):
        if self._own_record():
            fields = dict(fields, run_id=self._run_id)
        amlnode_run._record(name, kind, description, **fields)

    def log(self, name, value, description="", step=None):
        """Logs a number, str or bool under `name` (numpy scalars too), at `step` if given."""
        self._emit("scalar", name, description, amlnode_run._scalar_fields(value, step))

    def log_list(self, name, value, description=""):
        """Logs a list of values (a list, tuple, numpy array or pandas Series) as one record."""
        self._emit("list", name, description, amlnode_run._list_fields(value))

    def log_row(self, name, description=None, **kwargs):
        """Logs a row of named values: log_row("Y over X", x=1, y=0.4)."""
        self._emit("row", name, description, amlnode_run._row_fields(kwargs))

    def log_table(self, name, value, description=""):
        """Logs a table, a dict of column name -> list of values, as one record."""
        self._emit("table", name, description, amlnode_run._table_fields(value))

    def log_confusion_matrix(self, name, value, description=""):
        """Logs a confusion matrix, a dict or its JSON text ({"schema_type": "confusion_matrix",
        "data": {"class_labels": [...], "matrix": [[...]]}}), as one record with the dict as
        its "value"."""
        self._emit("confusion_matrix", name, description, {"value": _json_object(value)})

    def log_image(self, name, path=None, plot=None, description=""):
        """Saves an image as an artifact and logs a record naming it: from `path` (an image
        file) or from `plot` (a matplotlib pyplot or Figure, saved as <name>.png)."""
        if path is not None and plot is not None:
            raise UserErrorException("Invalid parameters, path and plot were both provided, only "
                                     "one at a time is supported")
        if path is None and plot is None:
            raise UserErrorException("Invalid parameters, one of path and plot is required as "
                                     "input")
        amlnode_run._check_name(name)
        artifacts = self._session.artifacts
        if path is not None:
            path = os.fspath(path)
            with open(path, "rb") as image:
                head = image.read(16)
            if not (head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")):
                raise UserErrorException(f"The path provided points to a malformed image file: "
                                         f"{path}")
            stored = artifacts.write_file(_image_artifact_name(artifacts, path), path)
        else:
            savefig = getattr(plot, "savefig", None)
            if not callable(savefig):
                raise UserErrorException("Invalid plot, must be matplotlib.pyplot")
            buffer = io.BytesIO()
            savefig(buffer, format="png")
            stored = artifacts.write_bytes(f"{name}.png", buffer.getvalue())
        self._emit("image", name, description, {"path": stored})

    def log_accuracy_table(self, name, value, description=""):
        raise not_provided("Run.log_accuracy_table()", "AutoML's metric, which amlnode does "
                           "not record; log_table or log_confusion_matrix are provided")

    def log_residuals(self, name, value, description=""):
        raise not_provided("Run.log_residuals()", "AutoML's metric, which amlnode does not "
                           "record; log_table is provided")

    def log_predictions(self, name, value, description=""):
        raise not_provided("Run.log_predictions()", "AutoML's metric, which amlnode does not "
                           "record; log_table is provided")

    def flush(self, timeout_seconds=300):
        """Writes the metrics logged so far to the metrics file and fsyncs it."""
        amlnode_run.flush()

    # Tags and properties.

    def tag(self, key, value=None):
        """Tags the run: `key` with an optional value (a non-str value is stored as its str)."""
        self.set_tags({key: value})

    def set_tags(self, tags):
        """Adds or changes tags: a dict, or a str / list of str (tags without a value)."""
        if isinstance(tags, str):
            tags = {tags: None}
        elif isinstance(tags, (list, tuple, set)):
            tags = {tag: None for tag in tags}
        if not hasattr(tags, "items"):
            raise TypeError(f"tags: expected a dict, got {type(tags).__name__}")
        for key, value in tags.items():
            self._session.tags.append("tag", _key(key), _tag_value(value), self._target())

    def get_tags(self):
        """{name: value} of the run's tags."""
        return self._session.tags.current("tag", self._target())

    def remove_tags(self, tags):
        raise not_provided("Run.remove_tags()", "tags are appended to the run's tags file")

    def add_properties(self, properties):
        """Adds properties. A property cannot change once set (the SDK's rule): setting one to
        another value raises UserErrorException; setting it to the same value does nothing."""
        if not hasattr(properties, "items"):
            raise TypeError(f"properties: expected a dict, got {type(properties).__name__}")
        with self._session.lock:
            current = self._session.tags.current("property", self._target())
            added = {}
            for key, value in properties.items():
                key, value = _key(key), _tag_value(value)
                if key in current and current[key] != value:
                    raise UserErrorException(
                        f"property {key!r} is already {current[key]!r}; properties are "
                        f"immutable, so it cannot become {value!r}")
                if key not in current:
                    added[key] = value
            for key, value in added.items():
                self._session.tags.append("property", key, value, self._target())

    def get_properties(self):
        """{name: value} of the run's properties."""
        return self._session.tags.current("property", self._target())

    def _target(self):
        return self._run_id if self._own_record() else None

    # Artifacts.

    def upload_file(self, name, path_or_stream, datastore_name=None):
        """Copies a file (a path, or a stream to read) to the artifact `name`: "outputs/..." and
        "logs/..." land in the run's ./outputs and ./logs; other names under ./outputs."""
        if hasattr(path_or_stream, "read"):
            self._session.artifacts.write_stream(name, path_or_stream)
        else:
            self._session.artifacts.write_file(name, path_or_stream)

    def upload_files(self, names, paths, return_artifacts=False, timeout_seconds=None,
                     datastore_name=None):
        """upload_file for each pair of `names` and `paths`."""
        names, paths = list(names), list(paths)
        if len(names) != len(paths):
            raise UserErrorException(f"names and paths differ in length ({len(names)} and "
                                     f"{len(paths)})")
        for name, path in zip(names, paths):
            self.upload_file(name, path)

    def upload_folder(self, name, path, datastore_name=None):
        """Copies every file under the folder `path` to the artifact <name>/<relative path>."""
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise UserErrorException(f"{path} is not a folder")
        prefix = os.fspath(name).strip("/")
        parse_name(prefix + "/file")  # refuses a bad prefix before anything is copied
        files = []
        for folder, subfolders, names in os.walk(path):
            subfolders.sort()
            for file in sorted(names):
                full = os.path.join(folder, file)
                if os.path.isfile(full):
                    files.append((os.path.relpath(full, path).replace(os.sep, "/"), full))
        for relative, full in files:  # listed first, so a folder copied into itself ends
            self._session.artifacts.write_file(f"{prefix}/{relative}" if prefix else relative,
                                               full)

    def get_file_names(self):
        """The artifact names of the run's files under ./outputs and ./logs."""
        return self._session.artifacts.list_names()

    # Ending.

    def complete(self, _set_status=True):
        """Flushes; the run ends when the script exits (Completed, unless run.fail() was called).
        A child run made here is Completed from then on (get_status)."""
        amlnode_run.flush()
        if self._child_of is not None and _set_status:
            self._child_status = "Completed"

    def fail(self, error_details=None, error_code=None, _set_status=True):
        """Flushes and marks the run Failed with the error given: the agent ends it Failed even
        if the script then exits 0."""
        amlnode_run.flush()
        if not _set_status:
            return
        if self._child_of is not None:
            # The child alone fails, as in the SDK; the script's own run goes on.
            self._child_status = "Failed"
            return
        if self._is_parent:
            raise not_provided("Run.parent.fail()", "a step cannot end its pipeline's run here")
        message = (str(error_details) if error_details is not None
                   else "The script called run.fail()")
        if len(message) > _records.MAX_ERROR_MESSAGE_CHARS:
            message = message[:_records.MAX_ERROR_MESSAGE_CHARS] + "... (cut)"
        status = {"status": "Failed", "error": {"code": str(error_code or "UserError"),
                                                "message": message}}
        path = self._session.context.status_file
        self._session.failed = True
        if not path:
            warn("run.fail(): the run's status file is not known ($AMLNODE_RUN_CONTEXT and "
                 "$AMLNODE_METRICS_FILE are unset); the run ends as the script's exit says")
            return
        _records.write_status(path, status)

    def cancel(self):
        raise not_provided("Run.cancel()", "a run is canceled through amlnode (amlnode cancel)")

    # Calls that need Azure.

    def register_model(self, model_name, model_path=None, **kwargs):
        raise not_provided("Run.register_model()", "registering a model needs Azure's model "
                           "registry; the model stays in the run's ./outputs")

    def download_file(self, name, output_file_path=None, **kwargs):
        raise not_provided("Run.download_file()")

    def download_files(self, prefix=None, output_directory=None, **kwargs):
        raise not_provided("Run.download_files()")

    def get_metrics(self, name=None, recursive=False, run_type=None, populate=False):
        raise not_provided("Run.get_metrics()", "metrics are read from the control plane "
                           "(amlnode metrics RUN), not from inside the run")

    def child_run(self, name=None, run_id=None, outputs=None):
        """A child run of this one, to log a part of the script under (`with run.child_run() as
        child:` completes it, or fails it on an exception). Its id is `run_id`, else
        <run id>_<n>; its metrics and tags go to this run's files with its "run_id"."""
        if run_id is not None and (not isinstance(run_id, str) or not run_id):
            raise UserErrorException(f"run_id: expected a non-empty str, got {run_id!r}")
        return self._new_child(run_id)

    def create_children(self, count=None, tag_key=None, tag_values=None):
        """`count` child runs of this one (or one per value of `tag_values`, each tagged
        `tag_key`: value), ids <run id>_<n> with n counting from 0 in this process. Their
        metrics and tags go to this run's files, each record with the child's "run_id"."""
        if tag_values is not None:
            tag_values = list(tag_values)
            if tag_key is None:
                raise UserErrorException("create_children: tag_values needs a tag_key")
            if count is not None and count != len(tag_values):
                raise UserErrorException(f"create_children: count ({count}) differs from the "
                                         f"number of tag_values ({len(tag_values)})")
            count = len(tag_values)
        if count is None:
            raise UserErrorException("create_children: give count or tag_values")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise UserErrorException(f"count: expected an int >= 0, got {count!r}")
        children = [self._new_child(None) for _ in range(count)]
        if tag_values is not None:
            for child, value in zip(children, tag_values):
                child.tag(tag_key, value)
        return children

    def _new_child(self, run_id):
        if self._own_record():
            raise not_provided("child runs of Run.parent or of a child run",
                               "only the script's own run makes child runs here")
        with self._session.lock:
            if run_id is None:
                run_id = f"{self._run_id}_{self._session.children}"
            self._session.children += 1
        return Run(self._experiment, run_id, _amlnode_session=self._session,
                   _amlnode_child_of=self)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        """A child run ends Completed, or Failed when the block raised; the script's own run
        only flushes (it ends when the script exits)."""
        if self._child_of is not None and exc_type is not None:
            self.fail(error_details=exc_value)
        else:
            self.complete()
        return False

    def submit_child(self, config, tags=None, **kwargs):
        raise not_provided("Run.submit_child()", "a child that is a run of its own needs a "
                           "submission; amlnode runs no child runs")

    def get_children(self, recursive=False, tags=None, properties=None, type=None, status=None,
                     _rehydrate_runs=True):
        raise not_provided("Run.get_children()", "amlnode runs no child runs")

    def wait_for_completion(self, show_output=False, wait_post_processing=False,
                            raise_on_error=True):
        raise not_provided("Run.wait_for_completion()", "a script cannot wait for its own run")

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(f"Run.{name} is not provided by amlnode's stand-in for the Azure ML "
                             f"SDK v1; see {DOCS}")

    def __repr__(self):
        return f"Run(Experiment: {self._experiment.name},\nId: {self._run_id},\nType: None,\n" \
               f"Status: {self.get_status()})"


class _OfflineRun:
    """The run outside a run (the SDK's _OfflineRun): log calls print what they would record,
    tags and properties are kept in this process, artifacts are not written."""

    def __init__(self, parent_logger=None, run_id=None, **kwargs):
        self._run_id = run_id or f"OfflineRun_{uuid.uuid4()}"
        self._tags, self._properties = {}, {}

    @property
    def id(self):
        return self._run_id

    @property
    def parent(self):
        return None

    @property
    def input_datasets(self):
        return {}

    @property
    def experiment(self):
        raise AttributeError("'_OfflineRun' object has no attribute 'experiment' (an offline run "
                             "has no experiment, as in the Azure ML SDK)")

    def _notice(self, kind, name, value):
        print(f"Attempted to log {kind} metric {name}:\n{value}")

    def log(self, name, value, description="", step=None):
        self._notice("scalar", name, value)

    def log_list(self, name, value, description=""):
        self._notice("list", name, value)

    def log_row(self, name, description=None, **kwargs):
        self._notice("row", name, kwargs)

    def log_table(self, name, value, description=""):
        self._notice("table", name, value)

    def log_image(self, name, path=None, plot=None, description=""):
        self._notice("image", name, path if path is not None else plot)

    def log_confusion_matrix(self, name, value, description=""):
        self._notice("confusion_matrix", name, value)

    def tag(self, key, value=None):
        self._tags[key] = _tag_value(value)

    def set_tags(self, tags):
        if isinstance(tags, str):
            tags = {tags: None}
        elif isinstance(tags, (list, tuple, set)):
            tags = {tag: None for tag in tags}
        for key, value in tags.items():
            self._tags[key] = _tag_value(value)

    def get_tags(self):
        return dict(self._tags)

    def add_properties(self, properties):
        for key, value in properties.items():
            self._properties.setdefault(key, _tag_value(value))

    def get_properties(self):
        return dict(self._properties)

    def upload_file(self, name, path_or_stream, datastore_name=None):
        print(f"Attempted to upload file {name} (an offline run keeps no artifacts)")

    def upload_files(self, names, paths, return_artifacts=False, timeout_seconds=None,
                     datastore_name=None):
        for name in names:
            self.upload_file(name, None)

    def upload_folder(self, name, path, datastore_name=None):
        print(f"Attempted to upload folder {name} (an offline run keeps no artifacts)")

    def get_file_names(self):
        return []

    def get_status(self):
        return "Running"

    def get_details(self):
        return {"runId": self._run_id, "target": "local", "status": "Running",
                "startTimeUtc": None, "properties": dict(self._properties), "inputDatasets": [],
                "outputDatasets": [], "runDefinition": {}, "logFiles": {}}

    def flush(self, timeout_seconds=300):
        pass

    def complete(self, _set_status=True):
        pass

    def fail(self, error_details=None, error_code=None, _set_status=True):
        pass

    def __repr__(self):
        return f"_OfflineRun(Id: {self._run_id})"


def _key(key):
    if not isinstance(key, str) or not key:
        raise TypeError(f"tag and property names must be non-empty str, got {key!r}")
    return key


def _tag_value(value):
    # The SDK stores a non-str value as its str (with a warning), and a missing one as None.
    return value if value is None or isinstance(value, str) else str(value)


def _json_object(value):
    """A dict (or its JSON text) as plain JSON: numpy values as numbers, NaN as "NaN"."""
    import json
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise UserErrorException("Invalid JSON provided") from None
    return _plain(value, "value")


def _plain(value, field):
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{field}[{k!r}]") for k, v in value.items()}
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and getattr(value, "ndim", 0) != 0:  # numpy arrays, pandas Series
        value = tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{field}[{i}]") for i, v in enumerate(value)]
    return amlnode_run._scalar(value, field)


def _image_artifact_name(artifacts, path):
    """The artifact name of an image logged from a path: the file's own name when it is already
    under ./outputs or ./logs; else the path when it is a valid relative name; else its basename."""
    inside = artifacts.name_of_path(path)
    if inside is not None:
        return inside
    if not os.path.isabs(path):
        try:
            parse_name(path)
            return path
        except UserErrorException:
            pass
    return os.path.basename(path)
