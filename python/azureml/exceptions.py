"""amlnode's stand-in for the Azure ML SDK v1's `azureml.exceptions` (docs/sdk-compat.md).

Provides the exception names scripts catch, with the SDK's hierarchy as far as scripts rely on it:
AzureMLException, UserErrorException, RunEnvironmentException, ModelNotFoundException and
WebserviceException, each carrying `message` as the SDK's do. Nothing else of the SDK's
exceptions module is provided.
"""

__all__ = ["AzureMLException", "UserErrorException", "RunEnvironmentException",
           "ModelNotFoundException", "WebserviceException"]


class AzureMLException(Exception):
    """The base of the SDK's exceptions (stand-in)."""

    def __init__(self, exception_message="", inner_exception=None, **kwargs):
        super().__init__(exception_message)
        self.message = exception_message
        self.inner_exception = inner_exception

    def __str__(self):
        return self.message


class UserErrorException(AzureMLException):
    """A call the SDK refuses because of its arguments or the run's state (stand-in)."""


class RunEnvironmentException(AzureMLException):
    """Raised by Run.get_context(allow_offline=False) outside a run, as the SDK does (stand-in)."""

    def __init__(self, exception_message=None, **kwargs):
        super().__init__(exception_message or (
            "Could not load a submitted run, if outside of an execution context, use "
            "experiment.start_logging to initialize an azureml.core.Run."), **kwargs)


class WebserviceException(AzureMLException):
    """The SDK's model and service errors (stand-in)."""


class ModelNotFoundException(AzureMLException):
    """Model.get_model_path found no such model (stand-in)."""
