"""amlnode's stand-in for the `azureml_user` package that Azure ML's ParallelRunStep gives its
entry scripts (docs/sdk-compat.md). It provides azureml_user.parallel_run.EntryScript only.
"""

from pkgutil import extend_path as _extend_path

__path__ = _extend_path(__path__, __name__)
