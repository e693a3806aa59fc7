"""One ParallelRunStep worker process (docs/parallel-run.md), started by `amlnode parallel-node`.

It imports the entry script once, calls its init() once, then run(mini_batch) for every
mini-batch the node's driver sends, as Azure ML's workers do. The driver talks to it over two
pipes, never over stdout or stderr (those are the entry script's, and go to the worker's logs):

  in  (fd $AMLNODE_PRS_IN):  one JSON object per line, a mini-batch:
        {"id": 7, "mini_batch": 3, "files": [...]} or
        {"id": 7, "mini_batch": 3, "table": {"file", "header_end", "begin", "end"}}
  out (fd $AMLNODE_PRS_OUT): one JSON object per line:
        {"ready": true}                          init() returned
        {"init_failed": {"message", "traceback"}} init() (or the import) raised; the worker exits
        {"id": 7, "ok": true, "items": N, "rows": R}
        {"id": 7, "ok": false, "message": ..., "traceback": ...}

A successful run()'s rows are written to <rows_dir>/<mini_batch>.<id>.txt (to a temporary name,
then renamed), a list's elements one per line and a DataFrame's rows space-separated without a
header, as Azure ML's append_row writes them. The driver concatenates the files of the tries it
counted, in mini-batch order, so each mini-batch's rows appear once and whole.

$AMLNODE_PRS_WORKER is this worker's settings as JSON: entry_script, arguments, rows_dir, kind
("files" or "table"), format ("delimited", "json_lines" or "parquet"), separator, header,
append_rows.
"""

import importlib.util
import inspect
import io
import json
import os
import sys
import traceback


class MiniBatchContext:
    """The optional second argument of run(mini_batch, mini_batch_context), as ParallelRunStep
    passes it: `partition_key_value` (a dict of the partition keys' values for this mini-batch,
    empty without partition keys), `dataset` (what the mini-batch came from: here a description,
    not an azureml Dataset), and `minibatch_index`."""

    def __init__(self, index, partition, dataset):
        self.minibatch_index = index
        self.partition_key_value = partition
        self.dataset = dataset

    def __repr__(self):
        return (f"MiniBatchContext(minibatch_index={self.minibatch_index}, "
                f"partition_key_value={self.partition_key_value})")


def _takes_context(run):
    """Whether run() takes a second positional argument (mini_batch_context)."""
    try:
        parameters = list(inspect.signature(run).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in parameters)


def _send(out, message):
    out.write(json.dumps(message) + "\n")
    out.flush()


# The node keeps a run's error bounded; a longer message or traceback keeps its start and end.
_MAX_TEXT = 16 * 1024


def _bounded(text):
    if len(text) <= _MAX_TEXT:
        return text
    half = _MAX_TEXT // 2
    return text[:half] + "\n[...]\n" + text[-half:]


def _error(exc):
    return {"message": _bounded(f"{type(exc).__name__}: {exc}"),
            "traceback": _bounded("".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__)))}


def _load(entry_script):
    folder = os.path.dirname(os.path.abspath(entry_script))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = os.path.splitext(os.path.basename(entry_script))[0]
    spec = importlib.util.spec_from_file_location(name, entry_script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _read_whole(settings, path):
    import pandas

    if settings["format"] == "parquet":
        return pandas.read_parquet(path)
    if settings["format"] == "json_lines":
        return pandas.read_json(path, lines=True)
    return pandas.read_csv(path, sep=settings.get("separator", ","),
                           header=0 if settings.get("header", True) else None)


def _read_partition(settings, files):
    """A table's partition: its files whole, each gaining its partition_format values as columns
    (strings, as the path gives them)."""
    import pandas

    frames = []
    for entry in files:
        frame = _read_whole(settings, entry["file"])
        for name, value in entry["columns"]:
            frame[name] = value
        frames.append(frame)
    return pandas.concat(frames, ignore_index=True) if frames else pandas.DataFrame()


def _read_table(settings, table):
    import pandas

    if settings["format"] == "parquet":
        return pandas.read_parquet(table["file"])
    with open(table["file"], "rb") as f:
        header = f.read(table["header_end"])
        f.seek(table["begin"])
        data = header + f.read(table["end"] - table["begin"])
    if settings["format"] == "json_lines":
        return pandas.read_json(io.BytesIO(data), lines=True)
    return pandas.read_csv(io.BytesIO(data), sep=settings.get("separator", ","),
                           header=0 if settings.get("header", True) else None)


def _rows(result):
    """The lines append_row writes for run()'s result, or a TypeError naming what it was."""
    try:
        import pandas
    except ImportError:  # a file dataset's run() may live in an environment without pandas
        pandas = None
    if pandas is not None and isinstance(result, pandas.DataFrame):
        text = result.to_csv(sep=" ", header=False, index=False)
        return text, len(result)
    # A list, a tuple, a pandas Series or a numpy array: one line per element (an array's rows
    # as their text). Anything without a length (None, a generator) is not a result.
    if hasattr(result, "__len__") and hasattr(result, "__iter__") and \
            not isinstance(result, (str, bytes, dict)):
        lines = [str(item).replace("\n", " ") for item in result]
        return "".join(line + "\n" for line in lines), len(lines)
    raise TypeError(f"run() returned {type(result).__name__}; it must return a list, an array or "
                    "a pandas DataFrame (one element or row per result)")


def _write_rows(rows_dir, mini_batch, ticket, text):
    final = os.path.join(rows_dir, f"{mini_batch}.{ticket}.txt")
    temporary = final + ".tmp"
    with open(temporary, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(text)
    os.replace(temporary, final)


def main():
    settings = json.loads(os.environ["AMLNODE_PRS_WORKER"])
    requests = os.fdopen(int(os.environ["AMLNODE_PRS_IN"]), "r")
    out = os.fdopen(int(os.environ["AMLNODE_PRS_OUT"]), "w")
    sys.argv = [settings["entry_script"]] + settings.get("arguments", [])
    try:
        module = _load(settings["entry_script"])
        if hasattr(module, "init"):
            module.init()
        if not hasattr(module, "run"):
            raise AttributeError(f"{settings['entry_script']} has no run(mini_batch) function")
    except BaseException as exc:  # SystemExit too: the driver must hear why
        _send(out, {"init_failed": _error(exc)})
        return 1
    with_context = _takes_context(module.run)
    _send(out, {"ready": True})
    for line in requests:
        request = json.loads(line)
        ticket, mini_batch = request["id"], request["mini_batch"]
        items = 0
        try:
            if "table" in request:
                batch = _read_table(settings, request["table"])
            elif "table_files" in request:
                batch = _read_partition(settings, request["table_files"])
            else:
                batch = request["files"]
            items = len(batch)
            if with_context:
                partition = dict(request.get("partition", []))
                dataset = "amlnode mini-batch %d of %s" % (
                    mini_batch, ", ".join(f"{k}={v}" for k, v in partition.items()) or "the input")
                result = module.run(batch, MiniBatchContext(mini_batch, partition, dataset))
            else:
                result = module.run(batch)
            text, count = _rows(result)
            if settings.get("append_rows", True):
                _write_rows(settings["rows_dir"], mini_batch, ticket, text)
            _send(out, {"id": ticket, "ok": True, "items": items, "rows": count})
        except BaseException as exc:
            # Its items, when they were read: they count against error_threshold.
            _send(out, dict({"id": ticket, "ok": False, "items": items}, **_error(exc)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
