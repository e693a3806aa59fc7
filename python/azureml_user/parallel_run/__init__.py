"""amlnode's stand-in for Azure ML ParallelRunStep's `azureml_user.parallel_run`
(docs/sdk-compat.md): EntryScript, whose `logger` an entry script writes its log with. Nothing
else of the package is provided.
"""

from azureml_user.parallel_run.entry_script import EntryScript

__all__ = ["EntryScript"]
