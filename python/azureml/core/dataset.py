"""amlnode's stand-in for the Azure ML SDK v1's `azureml.core.dataset` (docs/sdk-compat.md).

Provides the datasets a run's job declares (the run context's "input_datasets"), as the SDK gives
a run its named inputs:

- Dataset.get_by_name(workspace, name, version="latest") and Dataset.get_by_id(workspace, id):
  the declared dataset of that name (or of that "id" in the declaration); an unknown one raises
  UserErrorException naming the declared ones. The version is not checked: the job declares one.
- TabularDataset (a "tabular" declaration): `name`, `id`, to_pandas_dataframe(), take(count),
  skip(count). The data is read with the user's pandas, imported only then: delimited files with
  pandas.read_csv (the declaration's separator, header, encoding, infer_column_types,
  empty_as_string), JSON lines with pandas.read_json(lines=True), parquet with
  pandas.read_parquet. A folder means every file in it (and below) of the format's extensions,
  in sorted order of their relative paths, concatenated.
- FileDataset (a "file" declaration): `name`, `id`, to_path(), download(target_path=None,
  overwrite=False), mount(mount_point=None). Run.input_datasets gives the path itself for a file
  dataset, as the SDK gives a mounted one.

Not provided, since they need Azure or a datastore: Dataset.Tabular.from_*, Dataset.File.from_files,
register, as_named_input, as_mount, as_download, ... They raise NotImplementedError naming
docs/sdk-compat.md.
"""

import os
import shutil

from azureml._amlnode import context as _context
from azureml._amlnode import not_provided, DOCS
from azureml.exceptions import UserErrorException

__all__ = ["Dataset", "TabularDataset", "FileDataset"]

EXTENSIONS = {
    "delimited": (".csv", ".tsv", ".txt", ".psv", ".dat"),
    "json_lines": (".jsonl", ".json", ".ndjson"),
    "parquet": (".parquet", ".parq", ".pq"),
}
# The SDK's encoding names (from_delimited_files(encoding=...)) as Python's codecs know them.
ENCODINGS = {"utf8": "utf-8", "utf8bom": "utf-8-sig", "iso88591": "iso-8859-1",
             "latin1": "latin-1", "ascii": "ascii", "utf16": "utf-16", "utf32": "utf-32",
             "windows1252": "cp1252"}


def _files_under(path):
    """Regular files under a folder, recursively (links to folders are not followed), sorted by
    their relative paths; a file is itself."""
    if not os.path.isdir(path):
        return [path]
    found = []
    for folder, subfolders, files in os.walk(path):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        for file in files:
            full = os.path.join(folder, file)
            if not file.startswith(".") and os.path.isfile(full):
                found.append(os.path.relpath(full, path))
    return [os.path.join(path, relative) for relative in sorted(found)]


def _declared(name_or_id, by_id=False):
    datasets = _context.load().input_datasets
    if not by_id and name_or_id in datasets:
        return datasets[name_or_id]
    if by_id:
        for decl in datasets.values():
            if decl.id == name_or_id:
                return decl
        if name_or_id in datasets:
            return datasets[name_or_id]
    declared = ", ".join(sorted(datasets)) or "none"
    what = "id" if by_id else "name"
    raise UserErrorException(
        f"Dataset {what} {name_or_id!r} is not one of this run's input datasets (declared: "
        f"{declared}). amlnode resolves datasets from the job's declaration only; see {DOCS}.")


def _dataset_of(decl):
    return TabularDataset._of(decl) if decl.kind == "tabular" else FileDataset._of(decl)


class _NotProvidedFactory:
    """Dataset.Tabular and Dataset.File: every call of theirs needs Azure."""

    def __init__(self, prefix):
        self._prefix = prefix

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def call(*args, **kwargs):
            raise not_provided(f"{self._prefix}.{name}()",
                               "it reads a datastore in Azure; declare the dataset as an input "
                               "of the job and use Run.get_context().input_datasets or "
                               "Dataset.get_by_name")
        return call


class Dataset:
    """The datasets of this run (stand-in): Dataset.get_by_name and Dataset.get_by_id."""

    Tabular = _NotProvidedFactory("Dataset.Tabular")
    File = _NotProvidedFactory("Dataset.File")

    def __init__(self, *args, **kwargs):
        raise not_provided("Dataset(...)", "datasets come from the job's declaration; use "
                           "Dataset.get_by_name(workspace, name)")

    @staticmethod
    def get_by_name(workspace, name, version="latest"):
        """The declared input dataset called `name` (a TabularDataset or a FileDataset)."""
        return _dataset_of(_declared(name))

    @staticmethod
    def get_by_id(workspace, id, **kwargs):
        """The declared input dataset whose "id" (else whose name) is `id`."""
        return _dataset_of(_declared(id, by_id=True))

    @staticmethod
    def get_all(workspace):
        """{name: dataset} of every declared input dataset."""
        return {name: _dataset_of(decl)
                for name, decl in sorted(_context.load().input_datasets.items())}


class _AbstractDataset:
    def __init__(self, *args, **kwargs):
        raise not_provided(f"{type(self).__name__}(...)", "datasets come from the job's "
                           "declaration; use Dataset.get_by_name(workspace, name)")

    @classmethod
    def _of(cls, decl, steps=()):
        dataset = object.__new__(cls)
        dataset._decl = decl
        dataset._steps = tuple(steps)
        return dataset

    @property
    def name(self):
        return self._decl.name

    @property
    def id(self):
        return self._decl.id or self._decl.name

    @property
    def version(self):
        return None

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(f"{type(self).__name__}.{name} is not provided by amlnode's stand-in "
                             f"for the Azure ML SDK v1; see {DOCS}")

    def __repr__(self):
        return (f"{type(self).__name__}(name={self._decl.name!r}, path={self._decl.path!r}"
                + (f", format={self._decl.format!r}" if self._decl.format else "") + ")")


class TabularDataset(_AbstractDataset):
    """A declared tabular dataset (stand-in): to_pandas_dataframe(), take(), skip()."""

    def take(self, count):
        """The first `count` records, as a dataset."""
        return TabularDataset._of(self._decl, self._steps + (("take", _count(count)),))

    def skip(self, count):
        """All but the first `count` records, as a dataset."""
        return TabularDataset._of(self._decl, self._steps + (("skip", _count(count)),))

    def to_pandas_dataframe(self, on_error="null", out_of_range_datetime="null"):
        """The records as a pandas DataFrame (pandas is the run environment's own)."""
        try:
            import pandas
        except ImportError:
            raise ImportError("TabularDataset.to_pandas_dataframe() needs pandas, which the "
                              "run's Python environment does not have; add pandas to the job's "
                              "environment") from None
        decl = self._decl
        if not os.path.exists(decl.path):
            raise UserErrorException(f"dataset {decl.name!r}: {decl.path} does not exist")
        files = _files_under(decl.path)
        if os.path.isdir(decl.path):
            files = [f for f in files if f.lower().endswith(EXTENSIONS[decl.format])]
            if not files:
                raise UserErrorException(
                    f"dataset {decl.name!r}: {decl.path} has no {decl.format} files (names "
                    f"ending {', '.join(EXTENSIONS[decl.format])})")
        frames = self._read(pandas, files)
        frame = frames[0] if len(frames) == 1 else pandas.concat(frames, ignore_index=True)
        for step, count in self._steps:
            frame = frame.iloc[:count] if step == "take" else frame.iloc[count:]
            frame = frame.reset_index(drop=True)
        return frame

    def _read(self, pandas, files):
        decl = self._decl
        if decl.format == "json_lines":
            return [pandas.read_json(f, lines=True) for f in files]
        if decl.format == "parquet":
            return [pandas.read_parquet(f) for f in files]
        options = decl.options
        header = options.get("header", True)
        if isinstance(header, str):
            header = {"no_headers": False}.get(header.lower(), header.lower())
        kwargs = {"sep": options.get("separator", ","),
                  "encoding": ENCODINGS.get(options.get("encoding", "utf8"),
                                            options.get("encoding", "utf8"))}
        if options.get("infer_column_types") is False:
            kwargs["dtype"] = str
        if options.get("empty_as_string"):
            kwargs["keep_default_na"] = False
        frames = []
        for index, file in enumerate(files):
            if header is False:
                frames.append(pandas.read_csv(file, header=None, **kwargs))
            elif header == "only_first_file_has_headers" and index > 0:
                frames.append(pandas.read_csv(file, header=None, names=list(frames[0].columns),
                                              **kwargs))
            else:
                frames.append(pandas.read_csv(file, header=0, **kwargs))
        return frames


def _count(count):
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count: expected an int >= 0, got {count!r}")
    return count


class _MountContext:
    """What FileDataset.mount() gives: the data is on the node already, so nothing is mounted."""

    def __init__(self, mount_point):
        self.mount_point = mount_point

    def start(self):
        pass

    def stop(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FileDataset(_AbstractDataset):
    """A declared file dataset (stand-in): to_path(), download(), mount()."""

    def _root(self):
        path = self._decl.path
        return path if os.path.isdir(path) else os.path.dirname(path)

    def to_path(self):
        """The paths of the dataset's files, relative to its folder, each starting with "/"."""
        root = self._root()
        return ["/" + os.path.relpath(f, root).replace(os.sep, "/")
                for f in _files_under(self._decl.path)]

    def download(self, target_path=None, overwrite=False, **kwargs):
        """The absolute paths of the dataset's files. Without `target_path` they are the files
        where the run has them (nothing is copied); with it, they are copied there first."""
        files = _files_under(self._decl.path)
        if target_path is None:
            return [os.path.abspath(f) for f in files]
        root, copied = self._root(), []
        for file in files:
            target = os.path.abspath(os.path.join(os.fspath(target_path),
                                                  os.path.relpath(file, root)))
            if os.path.exists(target) and not overwrite:
                raise UserErrorException(f"{target} exists; pass overwrite=True to replace it")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(file, target)
            copied.append(target)
        return copied

    def mount(self, mount_point=None, **kwargs):
        """A context whose mount_point is the dataset's folder (the files are already there)."""
        return _MountContext(self._root())
