"""Tests of amlnode's stand-in for the Azure ML SDK v1 (python/azureml, python/azureml_user).

Each test makes a run folder as the agent lays it out (wd/ with outputs/ and logs/, system_logs/),
writes a run context file, runs a small script in a subprocess the way Azure ML scripts use the SDK,
and checks the files the script leaves. Run them with

    cd /work/wt-sdk && PYTHONPATH=python python3 -m unittest discover -s tests/python -v

$AMLNODE_PYTHON_DIR, when set, names the folder of the packages to test (ctest sets it to the
build's share/amlnode/python). Scripts that need numpy or pandas run under the first interpreter that has them
($AMLNODE_TEST_PYTHON, this one, /usr/bin/python3); without one those tests are skipped.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The packages under test: python/, or the copy a build puts beside the binaries.
PYTHON_DIR = os.environ.get("AMLNODE_PYTHON_DIR") or os.path.join(REPO, "python")
RUN_ID = "train_1763800980_0a1b2c3d"
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
       b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00"
       b"\x00\x00IEND\xaeB`\x82")


def _interpreter_with(*modules):
    candidates = [os.environ.get("AMLNODE_TEST_PYTHON"), sys.executable, "/usr/bin/python3"]
    for candidate in candidates:
        if candidate and os.path.exists(candidate):
            probe = subprocess.run([candidate, "-c", "import " + ", ".join(modules)],
                                   capture_output=True)
            if probe.returncode == 0:
                return candidate
    return None


NUMPY_PYTHON = _interpreter_with("numpy")
PANDAS_PYTHON = _interpreter_with("numpy", "pandas")
PARQUET_PYTHON = _interpreter_with("pandas", "pyarrow")


def _without_time(records):
    for record in records:
        assert isinstance(record.pop("time"), float), record
    return records


class RunFolder:
    """A run folder as the agent lays it out, its context file, and scripts run in it."""

    def __init__(self, test):
        self.tmp = tempfile.mkdtemp(prefix="azureml-standin-")
        test.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.root = os.path.join(self.tmp, "run")
        self.wd = os.path.join(self.root, "wd")
        self.outputs = os.path.join(self.wd, "outputs")
        self.logs = os.path.join(self.wd, "logs")
        self.system_logs = os.path.join(self.root, "system_logs")
        for folder in (self.outputs, self.logs, self.system_logs):
            os.makedirs(folder)
        self.metrics_file = os.path.join(self.system_logs, "metrics.jsonl")
        self.tags_file = os.path.join(self.system_logs, "tags.jsonl")
        self.status_file = os.path.join(self.system_logs, "script_status.json")
        self.context_file = os.path.join(self.root, "context.json")
        self.context = {
            "run_id": RUN_ID, "experiment": "train",
            "parent_run_id": None, "working_dir": self.wd, "outputs_dir": self.outputs,
            "logs_dir": self.logs, "metrics_file": self.metrics_file,
            "tags_file": self.tags_file, "status_file": self.status_file,
            "input_datasets": {}, "models": {}, "node_count": 1, "process_name": "process000"}

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def write(self, relative, data):
        path = self.path(relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb" if isinstance(data, bytes) else "w") as file:
            file.write(data)
        return path

    def env(self, with_context=True, **extra):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AZUREML_", "AMLNODE_", "AZ_BATCH"))}
        env["PYTHONPATH"] = PYTHON_DIR
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        if with_context:
            with open(self.context_file, "w") as file:
                json.dump(self.context, file)
            # What the agent sets beside the context file (docs/running.md).
            env.update({"AMLNODE_RUN_CONTEXT": self.context_file,
                        "AZUREML_RUN_ID": RUN_ID, "AZUREML_ARM_PROJECT_NAME": "train",
                        "AMLNODE_METRICS_FILE": self.metrics_file})
        env.update(extra)
        return env

    def run(self, script, python=None, with_context=True, check=True, cwd=None, **extra):
        result = subprocess.run([python or sys.executable, "-c", textwrap.dedent(script)],
                                cwd=cwd or self.wd, env=self.env(with_context, **extra),
                                capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"the script failed ({result.returncode}):\n{result.stderr}")
        return result

    def lines(self, path):
        with open(path) as file:
            return [json.loads(line) for line in file]

    def metrics(self):
        return _without_time(self.lines(self.metrics_file))

    def tags(self):
        return _without_time(self.lines(self.tags_file))

    def files(self, root=None):
        """The files under root (the test's folder), but the context file."""
        root = root or self.tmp
        found = []
        for folder, _, files in os.walk(root):
            found += [os.path.relpath(os.path.join(folder, f), root) for f in files
                      if os.path.join(folder, f) != self.context_file]
        return sorted(found)

    def read(self, *parts):
        with open(os.path.join(*parts), "rb") as file:
            return file.read()


class MetricsTest(unittest.TestCase):
    def test_run_log_calls_append_records_to_the_metrics_file(self):
        run = RunFolder(self)
        run.context["parent_run_id"] = "pipeline_1763800900_ffffffff"
        run.run("""
            from azureml.core import Run
            run = Run.get_context()
            run.log("loss", 0.5, step=1)
            run.log("loss", 0.25, description="training loss", step=2)
            run.log("note", "warm-up done")
            run.log("converged", True)
            run.log("diverged", float("nan"))
            run.log_list("accuracies", [0.5, 0.75, 1])
            run.log_row("Y over X", x=1, y=0.4)
            run.log_table("curve", {"x": [1, 2], "y": [0.5, 0.7]})
            run.log_confusion_matrix("cm", '{"schema_type": "confusion_matrix", "data": {"class_labels": ["a", "b"], "matrix": [[3, 1], [0, 4]]}}')
            run.parent.log("best_loss", 0.25)
        """)
        self.assertEqual(run.metrics(), [
            {"name": "loss", "kind": "scalar", "value": 0.5, "step": 1},
            {"name": "loss", "kind": "scalar", "description": "training loss", "value": 0.25,
             "step": 2},
            {"name": "note", "kind": "scalar", "value": "warm-up done"},
            {"name": "converged", "kind": "scalar", "value": True},
            {"name": "diverged", "kind": "scalar", "value": "NaN"},
            {"name": "accuracies", "kind": "list", "values": [0.5, 0.75, 1]},
            {"name": "Y over X", "kind": "row", "row": {"x": 1, "y": 0.4}},
            {"name": "curve", "kind": "table", "table": {"x": [1, 2], "y": [0.5, 0.7]}},
            {"name": "cm", "kind": "confusion_matrix", "value": {
                "schema_type": "confusion_matrix",
                "data": {"class_labels": ["a", "b"], "matrix": [[3, 1], [0, 4]]}}},
            {"name": "best_loss", "kind": "scalar", "value": 0.25,
             "run_id": "pipeline_1763800900_ffffffff"},
        ])

    def test_bad_metric_arguments_are_refused_with_the_argument_named(self):
        run = RunFolder(self)
        result = run.run("""
            from azureml.core import Run
            run = Run.get_context()
            for call in (lambda: run.log("", 1), lambda: run.log("x", object()),
                         lambda: run.log("x", 1, step=-1), lambda: run.log_list("x", "abc"),
                         lambda: run.log_row("x"), lambda: run.log_table("x", [1, 2]),
                         lambda: run.log_confusion_matrix("x", "{not json")):
                try:
                    call()
                    print("accepted")
                except Exception as e:
                    print(type(e).__name__, e)
        """)
        self.assertEqual(result.stdout,
                         "ValueError name: expected 1 to 255 characters, got 0\n"
                         "TypeError value: expected a number, str or bool, got object\n"
                         "ValueError step: expected an int >= 0 or None, got -1\n"
                         "TypeError value: expected a list of values, got str\n"
                         "ValueError log_row: give at least one column, e.g. log_row(name, loss=0.1)\n"
                         "TypeError value: expected a dict of column name -> list of values, got list\n"
                         "UserErrorException Invalid JSON provided\n")
        self.assertFalse(os.path.exists(run.metrics_file))

    def test_the_stand_in_does_not_import_numpy_for_a_script_that_does_not(self):
        run = RunFolder(self)
        result = run.run("""
            import sys
            from azureml.core import Run
            run = Run.get_context()
            run.log("acc", 0.5)
            run.log_list("l", (1, 2))
            print("numpy" in sys.modules, "pandas" in sys.modules)
        """, python=NUMPY_PYTHON)
        self.assertEqual(result.stdout, "False False\n")

    @unittest.skipUnless(NUMPY_PYTHON, "no python3 with numpy here")
    def test_numpy_scalars_and_arrays_are_taken_wherever_the_sdk_takes_numbers(self):
        run = RunFolder(self)
        run.run("""
            import numpy as np
            from azureml.core import Run
            run = Run.get_context()
            run.log("acc", np.float64(0.875))
            run.log("f32", np.float32(0.5), step=np.int64(3))
            run.log("count", np.int64(7))
            run.log("flag", np.bool_(True))
            run.log("zero_d", np.array(2.5))
            run.log("nan", np.float64("nan"))
            run.log_list("losses", np.array([0.5, 0.25, 0.125]))
            run.log_list("ints", np.arange(3, dtype=np.int32))
            run.log_row("row", tp=np.int64(10), rate=np.float32(0.25), ok=np.bool_(False))
            run.log_table("table", {"x": np.array([1, 2]), "y": [np.float64(0.5), 0.75]})
            run.log_confusion_matrix("cm", {"schema_type": "confusion_matrix",
                                            "data": {"class_labels": ["a", "b"],
                                                     "matrix": np.array([[3, 1], [0, 4]])}})
        """, python=NUMPY_PYTHON)
        self.assertEqual(run.metrics(), [
            {"name": "acc", "kind": "scalar", "value": 0.875},
            {"name": "f32", "kind": "scalar", "value": 0.5, "step": 3},
            {"name": "count", "kind": "scalar", "value": 7},
            {"name": "flag", "kind": "scalar", "value": True},
            {"name": "zero_d", "kind": "scalar", "value": 2.5},
            {"name": "nan", "kind": "scalar", "value": "NaN"},
            {"name": "losses", "kind": "list", "values": [0.5, 0.25, 0.125]},
            {"name": "ints", "kind": "list", "values": [0, 1, 2]},
            {"name": "row", "kind": "row", "row": {"tp": 10, "rate": 0.25, "ok": False}},
            {"name": "table", "kind": "table", "table": {"x": [1, 2], "y": [0.5, 0.75]}},
            {"name": "cm", "kind": "confusion_matrix", "value": {
                "schema_type": "confusion_matrix",
                "data": {"class_labels": ["a", "b"], "matrix": [[3, 1], [0, 4]]}}},
        ])

    @unittest.skipUnless(PANDAS_PYTHON, "no python3 with pandas here")
    def test_pandas_columns_and_series_log_as_lists(self):
        run = RunFolder(self)
        run.run("""
            import pandas as pd
            from azureml.core import Run
            run = Run.get_context()
            df = pd.DataFrame({"age": [30, 40], "bmi": [21.5, 30.25]})
            run.log("observations", df.shape[0])
            run.log_list("data columns", df.columns)
            run.log_list("bmi", df["bmi"])
            run.log("mean age", df["age"].mean())
        """, python=PANDAS_PYTHON)
        self.assertEqual(run.metrics(), [
            {"name": "observations", "kind": "scalar", "value": 2},
            {"name": "data columns", "kind": "list", "values": ["age", "bmi"]},
            {"name": "bmi", "kind": "list", "values": [21.5, 30.25]},
            {"name": "mean age", "kind": "scalar", "value": 35.0},
        ])

    def test_complete_writes_what_was_logged_before_the_script_ends(self):
        run = RunFolder(self)
        result = run.run("""
            import os
            from azureml.core import Run
            run = Run.get_context()
            run.log("loss", 0.5)
            run.complete()
            print(open(os.environ["AMLNODE_METRICS_FILE"]).read().count("\\n"))
            print(run.get_status())
        """)
        self.assertEqual(result.stdout, "1\nRunning\n")


class RunTest(unittest.TestCase):
    def test_the_import_forms_scripts_use_give_one_run_with_the_contexts_names(self):
        run = RunFolder(self)
        result = run.run("""
            from azureml.core.run import Run
            from azureml.core import Run as CoreRun, Dataset, Model, Workspace, Experiment
            from azureml.core import ScriptRunConfig, Environment  # importable, not usable
            import azureml.core
            run = Run.get_context(allow_offline=True)
            assert run is CoreRun.get_context() is azureml.core.Run.get_context()
            print(run.id)
            print(run.experiment.name)
            ws = run.experiment.workspace
            print(type(ws).__name__, ws.name, ws.subscription_id)
            print(run.parent)
            print(run.get_status())
        """, AZUREML_ARM_WORKSPACE_NAME="ws-west", AZUREML_ARM_SUBSCRIPTION="sub-1")
        self.assertEqual(result.stdout, "train_1763800980_0a1b2c3d\ntrain\nWorkspace ws-west "
                                        "sub-1\nNone\nRunning\n")

    def test_get_details_is_shaped_like_the_sdks(self):
        run = RunFolder(self)
        run.context.update({"target": "cpu-cluster", "start_time_utc": "2026-11-22T08:43:00.000Z",
                            "node_count": 2})
        data = run.write("data/train.csv", "a\n1\n")
        run.context["input_datasets"] = {
            "train": {"kind": "tabular", "path": data, "format": "delimited"},
            "images": {"kind": "file", "path": os.path.dirname(data), "id": "ds-42"}}
        result = run.run("""
            import json
            from azureml.core import Run
            run = Run.get_context()
            run.add_properties({"stage": "fit"})
            print(json.dumps(run.get_details(), sort_keys=True))
        """)
        self.assertEqual(json.loads(result.stdout), {
            "runId": "train_1763800980_0a1b2c3d", "target": "cpu-cluster", "status": "Running",
            "startTimeUtc": "2026-11-22T08:43:00.000Z", "properties": {"stage": "fit"},
            "inputDatasets": [
                {"dataset": {"name": "images", "id": "ds-42", "kind": "file",
                             "path": os.path.dirname(data)},
                 "consumptionDetails": {"type": "RunInput", "inputName": "images",
                                        "mechanism": "Mount"}},
                {"dataset": {"name": "train", "id": "train", "kind": "tabular", "path": data},
                 "consumptionDetails": {"type": "RunInput", "inputName": "train",
                                        "mechanism": "Direct"}}],
            "outputDatasets": [],
            "runDefinition": {"script": "-c", "arguments": [], "target": "cpu-cluster",
                              "nodeCount": 2},
            "logFiles": {}})

    def test_fail_writes_the_status_file_and_the_agent_sees_failed_even_after_exit_0(self):
        run = RunFolder(self)
        result = run.run("""
            import os
            from azureml.core import Run
            run = Run.get_context()
            run.log("rows", 0)
            try:
                raise ValueError("the input has no rows")
            except ValueError as error:
                run.fail(error_details=error, error_code="DataError")
            print(open(os.environ["AMLNODE_METRICS_FILE"]).read().count("\\n"))
            print(run.get_status())
        """)
        self.assertEqual(result.returncode, 0)
        self.assertEqual(result.stdout, "1\nFailed\n")
        with open(run.status_file) as file:
            self.assertEqual(file.read(), '{"status":"Failed","error":{"code":"DataError",'
                                          '"message":"the input has no rows"}}\n')
        self.assertEqual(sorted(os.listdir(run.system_logs)),
                         ["metrics.jsonl", "script_status.json"])  # no temporary file left
        # Another process of the run sees it.
        self.assertEqual(run.run("""
            from azureml.core import Run
            print(Run.get_context().get_status())
        """).stdout, "Failed\n")

    def test_fail_without_details_says_the_script_called_it(self):
        run = RunFolder(self)
        run.run("""
            from azureml.core import Run
            Run.get_context().fail()
        """)
        with open(run.status_file) as file:
            self.assertEqual(json.load(file), {"status": "Failed", "error": {
                "code": "UserError", "message": "The script called run.fail()"}})

    def test_calls_that_need_azure_say_so_and_name_the_doc(self):
        run = RunFolder(self)
        result = run.run("""
            from azureml.core import Run, Workspace, Experiment, Model, Dataset, Environment
            run = Run.get_context()
            for call in (Workspace.from_config,
                         lambda: run.experiment.submit(None),
                         lambda: run.register_model("m", "outputs/m.pkl"),
                         lambda: Model.register(None, "m.pkl", "m"),
                         lambda: Dataset.Tabular.from_delimited_files(path="x"),
                         lambda: Environment.from_conda_specification("e", "e.yml"),
                         lambda: run.log_accuracy_table("t", {}),
                         lambda: run.get_metrics(),
                         lambda: run.no_such_call()):
                try:
                    call()
                except (NotImplementedError, AttributeError) as e:
                    print(type(e).__name__, "docs/sdk-compat.md" in str(e), str(e).split(" is not")[0])
        """)
        self.assertEqual(result.stdout,
                         "NotImplementedError True Workspace.from_config()\n"
                         "NotImplementedError True Experiment.submit()\n"
                         "NotImplementedError True Run.register_model()\n"
                         "NotImplementedError True Model.register()\n"
                         "NotImplementedError True Dataset.Tabular.from_delimited_files()\n"
                         "AttributeError True azureml.core.Environment.from_conda_specification\n"
                         "NotImplementedError True Run.log_accuracy_table()\n"
                         "NotImplementedError True Run.get_metrics()\n"
                         "AttributeError True Run.no_such_call\n")


class ChildRunTest(unittest.TestCase):
    def test_create_children_log_under_their_own_run_ids_in_the_runs_files(self):
        # manage-runs/hello_with_children.py (Azure/MachineLearningNotebooks), and the forms
        # around it: tag_key/tag_values, child_run() as a context manager, ids, statuses.
        run = RunFolder(self)
        run.context["parent_run_id"] = "pipeline_1"
        result = run.run("""
            from azureml.core import Run
            run = Run.get_context()
            child_runs = run.create_children(count=3)
            for c, child in enumerate(child_runs):
                child.log(name="Hello from child run ", value=c)
                child.complete()
            print([child.id for child in child_runs], child_runs[0].get_status())
            print(child_runs[1].parent is run, child_runs[1].input_datasets)
            tagged = run.create_children(tag_key="fold", tag_values=["a", "b"])
            print([(c.id, c.get_tags()) for c in tagged], run.get_tags())
            with run.child_run() as part:
                part.log_list("losses", [0.5, 0.25])
            print(part.id, part.get_status())
            try:
                with run.child_run(run_id="my_child") as part:
                    raise ValueError("boom")
            except ValueError:
                pass
            print(part.id, part.get_status(), run.get_status())
            for call in (lambda: run.create_children(),
                         lambda: run.create_children(count=1, tag_key="k", tag_values=["a", "b"]),
                         lambda: run.create_children(count=-1),
                         lambda: run.parent.create_children(count=1),
                         lambda: tagged[0].create_children(count=1)):
                try:
                    call()
                except Exception as e:
                    print(type(e).__name__, str(e).split(" is not")[0])
        """)
        self.assertEqual(result.stdout,
                         f"['{RUN_ID}_0', '{RUN_ID}_1', '{RUN_ID}_2'] Completed\n"
                         "True {}\n"
                         f"[('{RUN_ID}_3', {{'fold': 'a'}}), ('{RUN_ID}_4', {{'fold': 'b'}})] {{}}\n"
                         f"{RUN_ID}_5 Completed\n"
                         "my_child Failed Running\n"
                         "UserErrorException create_children: give count or tag_values\n"
                         "UserErrorException create_children: count (1) differs from the number "
                         "of tag_values (2)\n"
                         "UserErrorException count: expected an int >= 0, got -1\n"
                         "NotImplementedError child runs of Run.parent or of a child run\n"
                         "NotImplementedError child runs of Run.parent or of a child run\n")
        self.assertEqual(run.metrics(), [
            {"name": "Hello from child run ", "kind": "scalar", "value": 0,
             "run_id": f"{RUN_ID}_0"},
            {"name": "Hello from child run ", "kind": "scalar", "value": 1,
             "run_id": f"{RUN_ID}_1"},
            {"name": "Hello from child run ", "kind": "scalar", "value": 2,
             "run_id": f"{RUN_ID}_2"},
            {"name": "losses", "kind": "list", "values": [0.5, 0.25], "run_id": f"{RUN_ID}_5"},
        ])
        self.assertEqual(run.tags(), [
            {"kind": "tag", "name": "fold", "value": "a", "run_id": f"{RUN_ID}_3"},
            {"kind": "tag", "name": "fold", "value": "b", "run_id": f"{RUN_ID}_4"},
        ])
        # A failed child leaves the run's own status alone.
        self.assertFalse(os.path.exists(run.status_file))


class TagsTest(unittest.TestCase):
    def test_tags_and_properties_go_to_the_tags_file_and_come_back(self):
        run = RunFolder(self)
        run.context["parent_run_id"] = "pipeline_1"
        result = run.run("""
            from azureml.core import Run
            run = Run.get_context()
            run.tag("model", "resnet")
            run.tag("quick")
            run.set_tags({"epochs": 10, "model": "vit"})
            run.set_tags(["nightly"])
            run.add_properties({"data_version": "3"})
            run.add_properties({"data_version": "3"})  # the same value again: nothing happens
            try:
                run.add_properties({"data_version": "4"})
            except Exception as e:
                print(type(e).__name__, e)
            run.parent.tag("best_child", run.id)
            print(sorted(run.get_tags().items()))
            print(run.get_properties(), run.parent.get_tags())
        """)
        self.assertEqual(result.stdout,
                         "UserErrorException property 'data_version' is already '3'; properties "
                         "are immutable, so it cannot become '4'\n"
                         "[('epochs', '10'), ('model', 'vit'), ('nightly', None), "
                         "('quick', None)]\n"
                         "{'data_version': '3'} {'best_child': 'train_1763800980_0a1b2c3d'}\n")
        self.assertEqual(run.tags(), [
            {"kind": "tag", "name": "model", "value": "resnet"},
            {"kind": "tag", "name": "quick", "value": None},
            {"kind": "tag", "name": "epochs", "value": "10"},
            {"kind": "tag", "name": "model", "value": "vit"},
            {"kind": "tag", "name": "nightly", "value": None},
            {"kind": "property", "name": "data_version", "value": "3"},
            {"kind": "tag", "name": "best_child", "value": "train_1763800980_0a1b2c3d",
             "run_id": "pipeline_1"},
        ])
        # A later process of the run sees them, and properties stay immutable for it too.
        result = run.run("""
            from azureml.core import Run
            run = Run.get_context()
            print(run.get_tags()["model"], run.properties)
            try:
                run.add_properties({"data_version": "5"})
            except Exception as e:
                print(type(e).__name__)
        """)
        self.assertEqual(result.stdout, "vit {'data_version': '3'}\nUserErrorException\n")


class ArtifactsTest(unittest.TestCase):
    def test_uploads_land_in_outputs_and_logs(self):
        run = RunFolder(self)
        source = run.write("src/model.pt", b"weights")
        folder = os.path.dirname(run.write("src/folder/a.txt", "a"))
        run.write("src/folder/sub/b.txt", "b")
        result = run.run(f"""
            import io
            from azureml.core import Run
            run = Run.get_context()
            run.upload_file(name="outputs/model.pt", path_or_stream={source!r})
            run.upload_file("model_copy.pt", {source!r})
            run.upload_file("logs/notes.txt", io.StringIO("from a stream"))
            run.upload_file("outputs/bytes.bin", io.BytesIO(b"\\x00\\x01"))
            run.upload_folder("outputs/folder", {folder!r})
            run.upload_files(["outputs/x/1.txt", "2.txt"], [{source!r}, {source!r}])
            with open("outputs/own.txt", "w") as f:
                f.write("already in outputs")
            run.upload_file("outputs/own.txt", "outputs/own.txt")  # onto itself: unchanged
            print(run.get_file_names())
        """)
        self.assertEqual(result.stdout, str([
            "logs/notes.txt", "outputs/2.txt", "outputs/bytes.bin", "outputs/folder/a.txt",
            "outputs/folder/sub/b.txt", "outputs/model.pt", "outputs/model_copy.pt",
            "outputs/own.txt", "outputs/x/1.txt"]) + "\n")
        self.assertEqual(run.read(run.outputs, "model.pt"), b"weights")
        self.assertEqual(run.read(run.outputs, "model_copy.pt"), b"weights")
        self.assertEqual(run.read(run.logs, "notes.txt"), b"from a stream")
        self.assertEqual(run.read(run.outputs, "bytes.bin"), b"\x00\x01")
        self.assertEqual(run.read(run.outputs, "folder", "sub", "b.txt"), b"b")
        self.assertEqual(run.read(run.outputs, "own.txt"), b"already in outputs")

    def test_bad_artifact_names_are_refused_and_nothing_is_written(self):
        run = RunFolder(self)
        source = run.write("src/f.txt", "x")
        before = run.files()
        result = run.run(f"""
            from azureml.core import Run
            run = Run.get_context()
            for name in ("/etc/passwd", "../escape.txt", "outputs/../../escape.txt",
                         "a\\0b", "outputs", "logs/", ""):
                try:
                    run.upload_file(name, {source!r})
                    print("accepted", repr(name))
                except Exception as e:
                    print(type(e).__name__, e)
            try:
                run.upload_folder("../up", {os.path.dirname(source)!r})
            except Exception as e:
                print(type(e).__name__, e)
        """)
        self.assertEqual(result.stdout,
                         "UserErrorException artifact name '/etc/passwd' is absolute; give a "
                         "relative path such as outputs/model.pt\n"
                         "UserErrorException artifact name '../escape.txt': '..' is not allowed "
                         "in a name\n"
                         "UserErrorException artifact name 'outputs/../../escape.txt': '..' is "
                         "not allowed in a name\n"
                         "UserErrorException artifact name 'a\\x00b': NUL is not allowed in a "
                         "name\n"
                         "UserErrorException artifact name 'outputs' names no file; give a path "
                         "such as outputs/model.pt\n"
                         "UserErrorException artifact name 'logs/' names no file; give a path "
                         "such as outputs/model.pt\n"
                         "UserErrorException artifact name '' names no file; give a path such as "
                         "outputs/model.pt\n"
                         "UserErrorException artifact name '../up/file': '..' is not allowed in "
                         "a name\n")
        self.assertEqual(run.files(), before)

    def test_a_symlink_planted_in_outputs_is_never_followed(self):
        run = RunFolder(self)
        source = run.write("src/model.pt", "new weights")
        victim = run.write("victim.txt", "precious")
        outside = run.path("outside")
        os.makedirs(outside)
        os.symlink(victim, os.path.join(run.outputs, "model.pt"))
        os.symlink(outside, os.path.join(run.outputs, "sub"))
        os.makedirs(os.path.join(run.logs, "user", "entry_script_log", "0"))
        os.symlink(victim, os.path.join(run.logs, "user", "entry_script_log", "0",
                                        "process000.log.txt"))
        result = run.run(f"""
            from azureml.core import Run
            from azureml_user.parallel_run import EntryScript
            run = Run.get_context()
            run.upload_file("outputs/model.pt", {source!r})
            for name in ("outputs/sub/x.txt", "sub/deeper/x.txt"):
                try:
                    run.upload_file(name, {source!r})
                except Exception as e:
                    print(type(e).__name__, e)
            EntryScript().logger.info("to stderr, not through the link")
        """)
        self.assertEqual(result.stdout,
                         f"UserErrorException {run.outputs}/sub is a symbolic link or a file, not "
                         "a folder; amlnode does not write artifacts through it\n" * 2)
        self.assertIn("EntryScript: cannot open its log file", result.stderr)
        self.assertIn("|ParallelRunStep|<module>()|INFO|to stderr, not through the link",
                      result.stderr)
        self.assertEqual(run.read(victim), b"precious")
        self.assertEqual(os.listdir(outside), [])
        model = os.path.join(run.outputs, "model.pt")
        self.assertFalse(os.path.islink(model))  # the link was replaced, not written through
        self.assertEqual(run.read(model), b"new weights")

    def test_outputs_itself_a_symlink_is_refused(self):
        run = RunFolder(self)
        source = run.write("src/f.txt", "x")
        outside = run.path("outside")
        os.makedirs(outside)
        os.rmdir(run.outputs)
        os.symlink(outside, run.outputs)
        result = run.run(f"""
            from azureml.core import Run
            try:
                Run.get_context().upload_file("outputs/f.txt", {source!r})
            except Exception as e:
                print(type(e).__name__, e)
        """)
        self.assertEqual(result.stdout, f"UserErrorException {run.outputs} is a symbolic link or "
                                        "a file, not a folder; amlnode does not write artifacts "
                                        "through it\n")
        self.assertEqual(os.listdir(outside), [])

    def test_log_image_saves_the_image_as_an_artifact_and_records_its_name(self):
        run = RunFolder(self)
        image = run.write("plots/roc.png", PNG)
        not_image = run.write("plots/notes.txt", "not an image")
        result = run.run(f"""
            from azureml.core import Run
            run = Run.get_context()

            class Figure:  # what log_image uses of a matplotlib pyplot or Figure
                def savefig(self, stream, format):
                    assert format == "png"
                    stream.write({PNG!r})

            run.log_image("ROC", path={image!r})
            run.log_image("Loss curve", plot=Figure(), description="per epoch")
            with open("outputs/hist.png", "wb") as f:
                f.write({PNG!r})
            run.log_image("hist", path="outputs/hist.png")
            for call in (lambda: run.log_image("x"),
                         lambda: run.log_image("x", path={image!r}, plot=Figure()),
                         lambda: run.log_image("x", path={not_image!r}),
                         lambda: run.log_image("x", plot=object())):
                try:
                    call()
                except Exception as e:
                    print(type(e).__name__, e)
        """)
        self.assertEqual(result.stdout,
                         "UserErrorException Invalid parameters, one of path and plot is "
                         "required as input\n"
                         "UserErrorException Invalid parameters, path and plot were both "
                         "provided, only one at a time is supported\n"
                         f"UserErrorException The path provided points to a malformed image "
                         f"file: {not_image}\n"
                         "UserErrorException Invalid plot, must be matplotlib.pyplot\n")
        self.assertEqual(run.metrics(), [
            {"name": "ROC", "kind": "image", "path": "outputs/roc.png"},
            {"name": "Loss curve", "kind": "image", "description": "per epoch",
             "path": "outputs/Loss curve.png"},
            {"name": "hist", "kind": "image", "path": "outputs/hist.png"},
        ])
        for name in ("roc.png", "Loss curve.png", "hist.png"):
            self.assertEqual(run.read(run.outputs, name), PNG)


class OfflineTest(unittest.TestCase):
    def test_outside_a_run_get_context_gives_an_offline_run_that_records_nothing(self):
        run = RunFolder(self)
        result = run.run("""
            from azureml.core import Run
            from azureml.exceptions import RunEnvironmentException
            run = Run.get_context()
            print(type(run).__name__, run.id.startswith("OfflineRun_"), run.parent, run.get_status())
            run.log("acc", 0.5)
            run.log_list("l", [1, 2])
            run.tag("t", "v")
            print(run.get_tags())
            run.upload_file("outputs/m.pt", "nowhere")
            run.complete()
            try:
                run.experiment
            except AttributeError as e:
                print("AttributeError", e)
            try:
                Run.get_context(allow_offline=False)
            except RunEnvironmentException as e:
                print("RunEnvironmentException", e)
        """, with_context=False)
        self.assertEqual(result.stdout,
                         "_OfflineRun True None Running\n"
                         "Attempted to log scalar metric acc:\n0.5\n"
                         "Attempted to log list metric l:\n[1, 2]\n"
                         "{'t': 'v'}\n"
                         "Attempted to upload file outputs/m.pt (an offline run keeps no "
                         "artifacts)\n"
                         "AttributeError '_OfflineRun' object has no attribute 'experiment' (an "
                         "offline run has no experiment, as in the Azure ML SDK)\n"
                         "RunEnvironmentException Could not load a submitted run, if outside of "
                         "an execution context, use experiment.start_logging to initialize an "
                         "azureml.core.Run.\n")
        self.assertEqual(result.stderr, "")
        self.assertEqual(run.files(run.root), [])


class ContextTest(unittest.TestCase):
    def test_without_a_context_file_the_environment_of_a_run_is_enough(self):
        run = RunFolder(self)
        data = run.write("data/in.txt", "x")
        source = run.write("src/f.txt", "x")
        result = run.run(f"""
            from azureml.core import Run
            run = Run.get_context()
            print(run.id, run.experiment.name, run.input_datasets)
            run.log("acc", 1)
            run.tag("t")
            run.upload_file("f.txt", {source!r})
            run.fail("bad")
        """, with_context=False, AZUREML_RUN_ID="old_1", AZUREML_ARM_PROJECT_NAME="old",
            AMLNODE_METRICS_FILE=run.metrics_file, AZUREML_DATAREFERENCE_raw=data)
        self.assertEqual(result.stdout, f"old_1 old {{'raw': {data!r}}}\n")
        self.assertEqual(run.metrics(), [{"name": "acc", "kind": "scalar", "value": 1}])
        self.assertEqual(run.tags(), [{"kind": "tag", "name": "t", "value": None}])
        self.assertEqual(run.read(run.outputs, "f.txt"), b"x")
        with open(run.status_file) as file:
            self.assertEqual(json.load(file)["error"]["message"], "bad")

    def test_a_context_file_over_1_mib_is_ignored_with_one_warning(self):
        run = RunFolder(self)
        run.context["padding"] = "x" * (1 << 20)
        run.context["run_id"] = "from_the_file"
        result = run.run("""
            from azureml.core import Run
            print(Run.get_context().id)
            print(Run.get_context().id)
        """)
        self.assertEqual(result.stdout, "train_1763800980_0a1b2c3d\n" * 2)  # $AZUREML_RUN_ID
        self.assertEqual(result.stderr, f"azureml (amlnode stand-in): the run context "
                                        f"{run.context_file} is larger than 1048576 bytes; it is "
                                        "ignored\n")

    def test_fields_of_the_wrong_type_are_ignored_and_named(self):
        run = RunFolder(self)
        run.context.update({"run_id": 42, "experiment": ["x"], "outputs_dir": "relative/path",
                            "node_count": "2", "models": {"m": {"path": 3}},
                            "input_datasets": {"d": {"kind": "tabular", "path": "/x",
                                                     "format": "xlsx"}}})
        result = run.run("""
            from azureml.core import Run
            run = Run.get_context()
            print(run.id, run.experiment.name, run.get_details()["runDefinition"]["nodeCount"])
        """)
        self.assertEqual(result.stdout, "train_1763800980_0a1b2c3d train 1\n")
        self.assertEqual(result.stderr, f"azureml (amlnode stand-in): the run context "
                                        f"{run.context_file} has fields of the wrong type or "
                                        "shape, ignored: run_id, experiment, outputs_dir, "
                                        "input_datasets.d.format, models.m, node_count\n")

    def test_a_context_file_that_is_not_json_is_ignored(self):
        run = RunFolder(self)
        env_context = run.env()  # writes the file
        with open(run.context_file, "w") as file:
            file.write("{not json")
        result = subprocess.run([sys.executable, "-c", "from azureml.core import Run; "
                                 "print(Run.get_context().id)"], cwd=run.wd, env=env_context,
                                capture_output=True, text=True)
        self.assertEqual(result.stdout, "train_1763800980_0a1b2c3d\n")
        self.assertTrue(result.stderr.startswith(
            f"azureml (amlnode stand-in): the run context {run.context_file} is not valid JSON"))


class DatasetTest(unittest.TestCase):
    def _datasets(self, run):
        csv = run.write("data/diabetes.csv", "Pregnancies;Age\n1;30\n2;40\n3;50\n")
        folder = run.path("data/parts")
        run.write("data/parts/b/2.csv", "x,y\n3,c\n")
        run.write("data/parts/a.csv", "x,y\n1,a\n2,b\n")
        run.write("data/parts/README.md", "not data\n")
        run.write("data/parts/.hidden.csv", "x,y\n9,z\n")
        jsonl = run.write("data/events.jsonl", '{"id": 1, "kind": "click"}\n'
                                               '{"id": 2, "kind": "view"}\n')
        images = run.path("data/images")
        run.write("data/images/cat.png", PNG)
        run.write("data/images/dogs/dog.png", PNG)
        run.context["input_datasets"] = {
            "diabetes": {"kind": "tabular", "path": csv, "format": "delimited",
                         "options": {"separator": ";", "header": True, "encoding": "utf8"},
                         "id": "0f1e2d3c"},
            "parts": {"kind": "tabular", "path": folder, "format": "delimited"},
            "events": {"kind": "tabular", "path": jsonl, "format": "json_lines"},
            "images": {"kind": "file", "path": images},
            "one_file": {"kind": "file", "path": csv}}
        return images, csv

    @unittest.skipUnless(PANDAS_PYTHON, "no python3 with pandas here")
    def test_input_datasets_give_paths_and_tabular_datasets_as_dataframes(self):
        run = RunFolder(self)
        images, csv = self._datasets(run)
        result = run.run("""
            from azureml.core import Run, Dataset
            run = Run.get_context()
            ws = run.experiment.workspace
            print(run.input_datasets["images"])
            print(run.input_datasets["one_file"])
            diabetes = run.input_datasets["diabetes"]
            print(type(diabetes).__name__, diabetes.name)
            print(diabetes.to_pandas_dataframe().to_dict("list"))
            print(diabetes.skip(1).take(1).to_pandas_dataframe().to_dict("list"))
            print(Dataset.get_by_name(ws, name="parts").to_pandas_dataframe().to_dict("list"))
            print(Dataset.get_by_name(ws, "events").to_pandas_dataframe().to_dict("list"))
            print(Dataset.get_by_id(ws, id="0f1e2d3c").take(2).to_pandas_dataframe().shape)
            files = Dataset.get_by_name(ws, "images")
            print(type(files).__name__, files.to_path())
            print([p[len(run.input_datasets["images"]):] for p in files.download()])
            try:
                Dataset.get_by_name(ws, "diabetes_v2")
            except Exception as e:
                print(type(e).__name__, e)
        """, python=PANDAS_PYTHON)
        self.assertEqual(result.stdout.splitlines(), [
            images,
            csv,
            "TabularDataset diabetes",
            "{'Pregnancies': [1, 2, 3], 'Age': [30, 40, 50]}",
            "{'Pregnancies': [2], 'Age': [40]}",
            "{'x': [1, 2, 3], 'y': ['a', 'b', 'c']}",
            "{'id': [1, 2], 'kind': ['click', 'view']}",
            "(2, 2)",
            "FileDataset ['/cat.png', '/dogs/dog.png']",
            "['/cat.png', '/dogs/dog.png']",
            "UserErrorException Dataset name 'diabetes_v2' is not one of this run's input "
            "datasets (declared: diabetes, events, images, one_file, parts). amlnode resolves "
            "datasets from the job's declaration only; see docs/sdk-compat.md.",
        ])

    @unittest.skipUnless(PANDAS_PYTHON, "no python3 with pandas here")
    def test_delimited_options_without_header_and_as_strings(self):
        run = RunFolder(self)
        tsv = run.write("data/t.tsv", "1\t007\n2\t\n")
        run.context["input_datasets"] = {"t": {
            "kind": "tabular", "path": tsv, "format": "delimited",
            "options": {"separator": "\t", "header": False, "infer_column_types": False,
                        "empty_as_string": True, "unknown_option": 1}}}
        result = run.run("""
            from azureml.core import Run
            print(Run.get_context().input_datasets["t"].to_pandas_dataframe().values.tolist())
        """, python=PANDAS_PYTHON)
        self.assertEqual(result.stdout, "[['1', '007'], ['2', '']]\n")

    @unittest.skipUnless(PARQUET_PYTHON, "no python3 with pandas and pyarrow here")
    def test_parquet(self):
        run = RunFolder(self)
        path = run.path("data/t.parquet")
        os.makedirs(os.path.dirname(path))
        subprocess.run([PARQUET_PYTHON, "-c", "import pandas as pd; pd.DataFrame({'a': [1, 2]})"
                        f".to_parquet({path!r})"], check=True)
        run.context["input_datasets"] = {"t": {"kind": "tabular", "path": path,
                                               "format": "parquet"}}
        result = run.run("""
            from azureml.core import Run
            print(Run.get_context().input_datasets["t"].to_pandas_dataframe().to_dict("list"))
        """, python=PARQUET_PYTHON)
        self.assertEqual(result.stdout, "{'a': [1, 2]}\n")


class ModelTest(unittest.TestCase):
    def test_get_model_path_resolves_declared_models_then_the_model_dir(self):
        run = RunFolder(self)
        model = run.write("models/iris/model.pkl", b"pickle")
        model_dir = run.path("model_dir")
        os.makedirs(os.path.join(model_dir, "legacy"))
        run.context["models"] = {"iris": {"path": model, "version": 3}}
        result = run.run("""
            from azureml.core.model import Model
            from azureml.exceptions import ModelNotFoundException
            print(Model.get_model_path("iris"))
            print(Model.get_model_path(model_name="iris", version=3))
            print(Model.get_model_path("legacy"))
            for call in (lambda: Model.get_model_path("iris", version=2),
                         lambda: Model.get_model_path("missing")):
                try:
                    call()
                except ModelNotFoundException as e:
                    print(type(e).__name__, e)
        """, AZUREML_MODEL_DIR=model_dir)
        self.assertEqual(result.stdout.splitlines(), [
            model, model, os.path.join(model_dir, "legacy"),
            "ModelNotFoundException Model iris version 2 not found: the job declares version 3 "
            "of it. See docs/sdk-compat.md.",
            f"ModelNotFoundException Model missing not found: the job declares these models: "
            f"iris (version 3); $AZUREML_MODEL_DIR ({model_dir}) has no missing; and neither "
            f"azureml-models/missing nor missing is in the current working directory {run.wd}. "
            "See docs/sdk-compat.md.",
        ])


class EntryScriptTest(unittest.TestCase):
    def test_the_entry_script_logger_writes_under_logs_user(self):
        run = RunFolder(self)
        result = run.run("""
            from azureml_user.parallel_run import EntryScript

            def init():
                entry_script = EntryScript()
                entry_script.logger.info("init() is called.")
                entry_script.logger.debug("not at INFO")

            def run(mini_batch):
                logger = EntryScript().logger
                logger.warning("mini batch %s", mini_batch)
                return mini_batch

            init()
            run(["a.csv", "b.csv"])
            e = EntryScript()
            assert e is EntryScript()
            print(e.output_dir, e.working_dir, e.log_dir, e.agent_name)
        """, AZUREML_NODE_RANK="1", AMLNODE_PRS_PROCESS_NAME="process002")
        self.assertEqual(result.stdout, f"{run.outputs} {run.wd} {run.logs}/user process002\n")
        path = os.path.join(run.logs, "user", "entry_script_log", "1", "process002.log.txt")
        with open(path) as file:
            lines = [line.split("|", 1)[1] for line in file.read().splitlines()]
        self.assertEqual(lines, ["ParallelRunStep|init()|INFO|init() is called.",
                                 "ParallelRunStep|run()|WARNING|mini batch ['a.csv', 'b.csv']"])

    def test_the_process_name_defaults_to_the_contexts_then_process000(self):
        run = RunFolder(self)
        run.context["process_name"] = "process005"
        run.run("""
            from azureml_user.parallel_run import EntryScript
            EntryScript(logging_level="DEBUG").logger.debug("debug kept")
        """)
        path = os.path.join(run.logs, "user", "entry_script_log", "0", "process005.log.txt")
        with open(path) as file:
            self.assertTrue(file.read().endswith("|ParallelRunStep|<module>()|DEBUG|debug kept\n"))
        del run.context["process_name"]
        run.run("""
            from azureml_user.parallel_run import EntryScript
            EntryScript().logger.info("x")
        """)
        self.assertTrue(os.path.exists(os.path.join(run.logs, "user", "entry_script_log", "0",
                                                    "process000.log.txt")))


class NamespaceTest(unittest.TestCase):
    def _fake_site(self, run, with_core):
        site = run.path("site")
        run.write("site/azureml/__init__.py",
                  "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n")
        run.write("site/azureml/fakepkg/__init__.py", "WHERE = 'site'\n")
        if with_core:
            run.write("site/azureml/core/__init__.py", "WHERE = 'installed azureml-core'\n")
        return site

    def test_other_azureml_distributions_still_import_and_core_is_the_stand_in(self):
        run = RunFolder(self)
        site = self._fake_site(run, with_core=True)
        result = run.run("""
            import azureml.fakepkg, azureml.core
            print(azureml.fakepkg.WHERE, hasattr(azureml.core, "Run"))
        """, PYTHONPATH=f"{PYTHON_DIR}:{site}")
        self.assertEqual(result.stdout, "site True\n")

    def test_amlnode_sdk_standin_0_gives_the_installed_sdk(self):
        run = RunFolder(self)
        site = self._fake_site(run, with_core=True)
        result = run.run("""
            import azureml.core
            print(azureml.core.WHERE)
        """, PYTHONPATH=f"{PYTHON_DIR}:{site}", AMLNODE_SDK_STANDIN="0")
        self.assertEqual(result.stdout, "installed azureml-core\n")

    def test_every_module_docstring_says_it_is_a_stand_in(self):
        for folder, _, files in os.walk(PYTHON_DIR):
            # amlnode's own modules (the metrics module, the ParallelRunStep worker) stand in
            # for nothing.
            if "__pycache__" in folder or "amlnode_run" in folder or "amlnode_parallel" in folder:
                continue
            for file in files:
                if file.endswith(".py"):
                    with open(os.path.join(folder, file)) as source:
                        text = source.read()
                    self.assertIn("stand-in", text.split('"""')[1], file)


if __name__ == "__main__":
    unittest.main()
