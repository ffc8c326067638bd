"""The image's ``train`` command: SageMaker runs ``docker run IMAGE train``.

It takes the place of the sagemaker-training toolkit's ``train``, which reads (and logs)
hyperparameters.json before any of our code runs: a file that is not a JSON object ended the job
with a traceback as its FailureReason. Here ``settings`` is the only reader of that file. Like
the toolkit in framework mode, it calls the function named by ``SAGEMAKER_TRAINING_MODULE``;
every failure ends through entrypoint/job/failure.py (a one-line ``/opt/ml/output/failure``, exit 1).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from sagemaker_training import logging_config, params

from core.errors import UserError
from entrypoint.job import failure
from entrypoint.job import smpaths as environment  # the toolkit's paths without its boto3 import

ENV_TRAINING_MODULE = "SAGEMAKER_TRAINING_MODULE"
DEFAULT_TRAINING_MODULE = "entrypoint.train:main"

logger = logging.getLogger("entrypoint")


def _entry_point(name: str) -> Callable[[], object]:
    """The function ``module:function`` names; a module that cannot be imported is the image's
    configuration, not a bug of ours: one line, with its traceback in the log."""
    module, _, function = name.partition(":")
    try:
        return getattr(importlib.import_module(module), function or "main")
    except Exception as exc:
        logger.error("Cannot load the training function %s", name, exc_info=exc)
        raise UserError(f"{type(exc).__name__}: {exc}") from exc


def main() -> None:
    output_dir = Path(environment.output_dir)
    try:
        run = _entry_point(os.environ.get(ENV_TRAINING_MODULE) or DEFAULT_TRAINING_MODULE)
        # After the import, as the toolkit does: importing its environment module resets the root level.
        logging_config.configure_logger(int(os.environ.get(params.LOG_LEVEL_ENV, logging.INFO)))
        run()
    except Exception as exc:  # entrypoint.train:main ends its own failures; another function may not
        failure.fail(exc, output_dir, {"output folder": output_dir})
    logger.info("Reporting training SUCCESS")


if __name__ == "__main__":
    main()
