"""The one exception type for a user's mistake, shared by training, serving and the launcher."""


class UserError(Exception):
    """A mistake the user can fix (bad hyperparameter, bad data, unreadable secret).

    Training ends with its message as a one-line ``/opt/ml/output/failure`` (the job's
    FailureReason) and exit code 1 (entrypoint/job/failure.py); the launcher prints it as one line
    and exits 1. A plain Exception, so that the launcher and serving need no training toolkit.
    Messages must never contain secrets.
    """
