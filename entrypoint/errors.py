"""The one exception type for user mistakes."""

from sagemaker_training import errors as toolkit_errors


class UserError(toolkit_errors.ClientError):
    """A mistake the user can fix (bad hyperparameter, bad data, unreadable secret).

    The toolkit turns a ClientError into a short ``/opt/ml/output/failure`` (the job's
    FailureReason) and exit code 1, without a traceback. Messages must never contain secrets.
    """
