"""amlnode's stand-in for the Azure ML SDK v1's `azureml.core.model` (docs/sdk-compat.md).

Provides Model.get_model_path(model_name, version=None, _workspace=None), which looks, in order:

1. in the job's declaration (the run context's "models": {name: {"path", "version"}}); a
   `version` that differs from the declared one is an error;
2. in $AZUREML_MODEL_DIR/<name> (its <version> folder when a version is asked for and exists);
3. where the SDK looks without a workspace: azureml-models/<name>/<version, else the latest>/
   (a folder holding one file or folder, which is returned), then ./<name>, in the current
   directory;

and raises ModelNotFoundException naming the declared models otherwise.

Not provided, since they need Azure: Model(workspace, name), Model.register, Model.list,
Model.deploy, download, ... They raise NotImplementedError naming docs/sdk-compat.md.
"""

import os

from azureml._amlnode import context as _context
from azureml._amlnode import not_provided, DOCS
from azureml.exceptions import ModelNotFoundException, WebserviceException

__all__ = ["Model"]

MODELS_DIR = "azureml-models"


class Model:
    """Registered models (stand-in): Model.get_model_path only."""

    def __init__(self, workspace=None, name=None, id=None, tags=None, properties=None,
                 version=None, run_id=None, model_framework=None, expand=True, **kwargs):
        raise not_provided("Model(workspace, name)", "it fetches a registered model from Azure; "
                           "declare the model in the job and use Model.get_model_path(name)")

    @staticmethod
    def get_model_path(model_name, version=None, _workspace=None):
        """The path on disk of the model `model_name` (see the module's docstring)."""
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise WebserviceException("version should be an int")
        if not isinstance(model_name, str) or not model_name:
            raise WebserviceException("model_name should be a non-empty str")
        models = _context.load().models
        declared = models.get(model_name)
        if declared is not None:
            if version is not None and declared.version is not None and version != declared.version:
                raise ModelNotFoundException(
                    f"Model {model_name} version {version} not found: the job declares version "
                    f"{declared.version} of it. See {DOCS}.")
            if not os.path.exists(declared.path):
                raise ModelNotFoundException(
                    f"Model {model_name} is declared at {declared.path}, which does not exist.")
            return declared.path
        model_dir = os.environ.get("AZUREML_MODEL_DIR")
        if model_dir:
            candidate = os.path.join(model_dir, model_name)
            if version is not None and os.path.exists(os.path.join(candidate, str(version))):
                return os.path.join(candidate, str(version))
            if os.path.exists(candidate):
                return candidate
        local = _local_model_path(model_name, version)
        if local is not None:
            return local
        names = ", ".join(f"{name}" + (f" (version {decl.version})" if decl.version else "")
                          for name, decl in sorted(models.items())) or "none"
        raise ModelNotFoundException(
            f"Model {model_name} not found: the job declares these models: {names}; "
            + (f"$AZUREML_MODEL_DIR ({model_dir}) has no {model_name}; " if model_dir else "")
            + f"and neither {MODELS_DIR}/{model_name} nor {model_name} is in the current working "
            f"directory {os.getcwd()}. See {DOCS}.")

    @staticmethod
    def register(workspace, model_path, model_name, **kwargs):
        raise not_provided("Model.register()", "registering a model needs Azure; write the "
                           "model under ./outputs, which the run keeps")

    @staticmethod
    def list(workspace, **kwargs):
        raise not_provided("Model.list()")

    @staticmethod
    def deploy(workspace, name, models, **kwargs):
        raise not_provided("Model.deploy()")


def _local_model_path(model_name, version):
    """The SDK's own search without a workspace: azureml-models/<name>/<version>/, then ./<name>."""
    folder = os.path.join(MODELS_DIR, model_name)
    if os.path.isdir(folder):
        if version is None:
            versions = [int(v) for v in os.listdir(folder) if v.isdigit()]
            version = max(versions) if versions else None
        if version is not None:
            candidate = os.path.join(folder, str(version))
            if os.path.isdir(candidate):
                entries = os.listdir(candidate)
                if len(entries) != 1:
                    raise WebserviceException(f"Dir {candidate} can contain only 1 file or "
                                              f"folder. Found {entries}")
                return os.path.join(candidate, entries[0])
    if os.path.exists(model_name):
        return model_name
    return None
