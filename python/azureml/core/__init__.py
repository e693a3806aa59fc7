"""amlnode's stand-in for the Azure ML SDK v1's `azureml.core` (docs/sdk-compat.md).

Provides what a training script uses inside a run, backed by the run's files on its amlnode node:

- Run (azureml.core.run): Run.get_context() and the run's metrics, tags, properties, artifacts,
  input datasets, parent, status, details, complete and fail;
- Dataset (azureml.core.dataset): Dataset.get_by_name / get_by_id over the job's declared inputs;
- Model (azureml.core.model): Model.get_model_path over the job's declared models;
- Workspace and Experiment (azureml.core.workspace, azureml.core.experiment): what
  Run.experiment holds.

ScriptRunConfig, Environment, RunConfiguration, ComputeTarget, Datastore, Keyvault and ScriptRun
can be imported (a script may import them beside Run) but not used: they configure or reach
Azure, and any use raises NotImplementedError naming docs/sdk-compat.md. Anything else of
azureml.core is not provided.
"""

from azureml._amlnode import DOCS, not_provided
from azureml.core.dataset import Dataset
from azureml.core.experiment import Experiment
from azureml.core.model import Model
from azureml.core.run import Run
from azureml.core.workspace import Workspace

__all__ = ["Run", "Dataset", "Model", "Workspace", "Experiment", "ScriptRunConfig",
           "Environment", "RunConfiguration", "ComputeTarget", "Datastore", "Keyvault",
           "ScriptRun"]


class _NotProvidedType(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"azureml.core.{cls.__name__}.{name} is not provided by amlnode's "
                             f"stand-in for the Azure ML SDK v1; see {DOCS}")


def _placeholder(name, why):
    def __init__(self, *args, **kwargs):
        raise not_provided(f"azureml.core.{name}", why)
    return _NotProvidedType(name, (), {"__init__": __init__, "__doc__": (
        f"Not provided by amlnode's stand-in for the Azure ML SDK v1 ({why}); it can be "
        f"imported, not used. See {DOCS}.")})


_SUBMITTING = "it configures a run's submission, which amlnode's job file does"
ScriptRunConfig = _placeholder("ScriptRunConfig", _SUBMITTING)
Environment = _placeholder("Environment", _SUBMITTING)
RunConfiguration = _placeholder("RunConfiguration", _SUBMITTING)
ScriptRun = _placeholder("ScriptRun", "it is a submitted run seen from outside; in a run's "
                         "script use Run.get_context()")
ComputeTarget = _placeholder("ComputeTarget", "it manages Azure compute")
Datastore = _placeholder("Datastore", "it reaches Azure storage; declare the data as an input "
                         "of the job")
Keyvault = _placeholder("Keyvault", "it reaches Azure Key Vault")


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(f"azureml.core.{name} is not provided by amlnode's stand-in for the "
                         f"Azure ML SDK v1; see {DOCS}")
