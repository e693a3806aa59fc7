"""amlnode's stand-in for the Azure ML SDK v1's `azureml.core.experiment` (docs/sdk-compat.md).

Provides Experiment as a run sees it through `Run.get_context().experiment`: its `name` (the
run's experiment, $AZUREML_ARM_PROJECT_NAME) and `workspace`. Experiment(workspace, name) builds
one, as in the SDK.

Not provided, since they need Azure: submit, start_logging, get_runs, archive, list, ... They
raise NotImplementedError naming docs/sdk-compat.md.
"""

from azureml._amlnode import not_provided

__all__ = ["Experiment"]


class Experiment:
    """An experiment: a name in a workspace (stand-in)."""

    def __init__(self, workspace, name, **kwargs):
        self._workspace = workspace
        self._name = name

    @property
    def name(self):
        return self._name

    @property
    def workspace(self):
        return self._workspace

    def submit(self, config, tags=None, **kwargs):
        raise not_provided("Experiment.submit()", "submitting runs is what amlnode's control "
                           "plane does (amlnode submit / amlnode run), not a run's script")

    def start_logging(self, *args, **kwargs):
        raise not_provided("Experiment.start_logging()")

    def get_runs(self, *args, **kwargs):
        raise not_provided("Experiment.get_runs()")

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"Experiment.{name} is not provided by amlnode's stand-in for the "
                             "Azure ML SDK v1; see docs/sdk-compat.md")

    def __repr__(self):
        return f"Experiment(Name: {self._name}, Workspace: {getattr(self._workspace, 'name', None)})"
