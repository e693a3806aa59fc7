"""amlnode's stand-in for the Azure Machine Learning SDK v1 (`azureml`), for scripts that amlnode runs.

amlnode puts this folder last on PYTHONPATH of every run, so `from azureml.core import Run` works in
every environment without installing anything. It provides the runtime surface a training script
uses inside a run, backed by what the run already has on the node (docs/sdk-compat.md):

- azureml.core: Run (get_context, log*, tags, properties, artifacts, fail, input_datasets,
  parent, get_status, get_details), Dataset (get_by_name, get_by_id), Model (get_model_path),
  Workspace and Experiment (what a run's Run.experiment holds);
- azureml.exceptions: the SDK's exception names that scripts catch.

Anything else of the SDK is not provided: the calls that would need Azure (Workspace.from_config,
Experiment.submit, Run.register_model, ...) raise NotImplementedError naming docs/sdk-compat.md.

Like the SDK's own `azureml`, this is a namespace package: other `azureml.*` distributions the
run's environment installs (azureml.pipeline, azureml.dataprep, ...) still import from there.
`azureml.core` is this stand-in's even when azureml-core is installed, since the real one cannot
reach Azure from a node; set AMLNODE_SDK_STANDIN=0 in the run's environment to get the installed
SDK instead.
"""

import os as _os
from pkgutil import extend_path as _extend_path

__path__ = _extend_path(__path__, __name__)
if _os.environ.get("AMLNODE_SDK_STANDIN") == "0":
    _here = _os.path.dirname(_os.path.abspath(__file__))
    __path__ = [p for p in __path__ if _os.path.abspath(p) != _here]
