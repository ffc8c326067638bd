"""The image's ``train`` command: SageMaker runs ``docker run IMAGE train``.

It takes the place of the sagemaker-training toolkit's ``train``, which reads (and logs)
hyperparameters.json before any of our code runs: a file that is not a JSON object ended the job
with a traceback as its FailureReason. Here ``settings`` is the only reader of that file. Like
the toolkit in framework mode, it calls the function named by ``SAGEMAKER_TRAINING_MODULE``; a
:class:`~entrypoint.errors.UserError` becomes a one-line ``/opt/ml/output/failure`` and exit 1.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from sagemaker_training import files, logging_config, params

from entrypoint.errors import UserError

ENV_TRAINING_MODULE = "SAGEMAKER_TRAINING_MODULE"
DEFAULT_TRAINING_MODULE = "entrypoint.train:main"

logger = logging.getLogger("entrypoint")


def _fail(message: str) -> None:
    """Write the FailureReason; a job that failed exits 1 even when the file cannot be written."""
    try:
        files.write_failure_file(message)
    except OSError as exc:
        print(f"train: could not write the failure file: {exc}", file=sys.stderr)
    logger.error("Reporting training FAILURE: %s", message)
    sys.exit(1)


def main() -> None:
    module, _, function = (os.environ.get(ENV_TRAINING_MODULE) or DEFAULT_TRAINING_MODULE).partition(":")
    try:
        run = getattr(importlib.import_module(module), function or "main")
        # After the import, as the toolkit does: importing its environment module resets the root level.
        logging_config.configure_logger(int(os.environ.get(params.LOG_LEVEL_ENV, logging.INFO)))
        run()
    except UserError as exc:
        _fail(str(exc))
    except Exception as exc:  # a bug: the traceback goes to the log, its last line to the failure
        logger.exception("Training failed")
        _fail(f"{type(exc).__name__}: {exc}")
    logger.info("Reporting training SUCCESS")


if __name__ == "__main__":
    main()
