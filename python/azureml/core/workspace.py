"""amlnode's stand-in for the Azure ML SDK v1's `azureml.core.workspace` (docs/sdk-compat.md).

Provides Workspace as a run sees it through `Run.get_context().experiment.workspace`: its `name`,
`subscription_id`, `resource_group` and `location`, taken from $AZUREML_ARM_WORKSPACE_NAME,
$AZUREML_ARM_SUBSCRIPTION and $AZUREML_ARM_RESOURCEGROUP when the run has them (else "amlnode",
None, None; location is None). Such a workspace can be passed to Dataset.get_by_name and
Dataset.get_by_id, which resolve from the job's declaration.

Not provided, since they need Azure: Workspace(...), Workspace.from_config, Workspace.get,
Workspace.create, Workspace.list, get_default_datastore, datastores, compute_targets, ... They
raise NotImplementedError naming docs/sdk-compat.md.
"""

import os

from azureml._amlnode import not_provided

__all__ = ["Workspace"]


class Workspace:
    """The workspace of the run (stand-in): names only; nothing here reaches Azure."""

    def __init__(self, subscription_id=None, resource_group=None, workspace_name=None, auth=None,
                 **kwargs):
        raise not_provided("Workspace(subscription_id, resource_group, workspace_name)",
                           "it connects to Azure; a run's workspace is "
                           "Run.get_context().experiment.workspace")

    @classmethod
    def _of_run(cls):
        workspace = object.__new__(cls)
        workspace._name = os.environ.get("AZUREML_ARM_WORKSPACE_NAME") or "amlnode"
        workspace._subscription_id = os.environ.get("AZUREML_ARM_SUBSCRIPTION") or None
        workspace._resource_group = os.environ.get("AZUREML_ARM_RESOURCEGROUP") or None
        return workspace

    @property
    def name(self):
        return self._name

    @property
    def subscription_id(self):
        return self._subscription_id

    @property
    def resource_group(self):
        return self._resource_group

    @property
    def location(self):
        return None

    @staticmethod
    def from_config(path=None, auth=None, _logger=None, _file_name=None):
        raise not_provided("Workspace.from_config()",
                           "it connects to Azure; in a run use "
                           "Run.get_context().experiment.workspace")

    @staticmethod
    def get(name, auth=None, subscription_id=None, resource_group=None, **kwargs):
        raise not_provided("Workspace.get()")

    @staticmethod
    def create(name, **kwargs):
        raise not_provided("Workspace.create()")

    @staticmethod
    def list(subscription_id, auth=None, resource_group=None):
        raise not_provided("Workspace.list()")

    def get_default_datastore(self):
        raise not_provided("Workspace.get_default_datastore()")

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"Workspace.{name} is not provided by amlnode's stand-in for the "
                             "Azure ML SDK v1; see docs/sdk-compat.md")

    def __repr__(self):
        return (f"Workspace.create(name='{self._name}', subscription_id='{self._subscription_id}', "
                f"resource_group='{self._resource_group}')")
