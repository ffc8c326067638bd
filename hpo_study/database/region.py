"""The AWS region a job reads its secret in, found without relying on one variable.

In order: the ``region-name`` hyperparameter; the region in ``db-secret`` when it is an ARN (the
secret lives there, whatever the job's region); the region in the job's own ARN,
``TRAINING_JOB_ARN``; then ``AWS_REGION``, ``AWS_DEFAULT_REGION`` and the rest of boto3's chain
(its config file). Which region variables SageMaker sets in a training container is not part of
its documented container contract: the training toolkit reads ``AWS_REGION``, then
``SAGEMAKER_REGION`` (sagemaker_training/trainer.py), and the SageMaker Python SDK reads the job's
ARN from ``TRAINING_JOB_ARN`` inside training jobs (src/sagemaker/experiments/_environment.py,
``_RunEnvironment.load``), so each is used when present and none is required.
"""

from __future__ import annotations

import os
import re

ENV_TRAINING_JOB_ARN = "TRAINING_JOB_ARN"
ENV_REGIONS = ("AWS_REGION", "AWS_DEFAULT_REGION")
# arn:PARTITION:SERVICE:REGION:ACCOUNT:...
_ARN = re.compile(r"^arn:aws[a-z-]*:[a-z0-9-]+:(?P<region>[a-z]{2}(-[a-z]+)+-\d+):\d{12}:")


def arn_region(text: str | None) -> str | None:
    """The region named in an ARN, or None when ``text`` is not a regional ARN."""
    match = _ARN.match((text or "").strip())
    return match.group("region") if match else None


def resolve(region_name: str | None, secret_id: str | None) -> str | None:
    """The region to read ``secret_id`` in; None when nothing names one (boto3 then says so)."""
    found = region_name or arn_region(secret_id) or arn_region(os.environ.get(ENV_TRAINING_JOB_ARN))
    if found:
        return found
    for name in ENV_REGIONS:
        if os.environ.get(name, "").strip():
            return os.environ[name].strip()
    import botocore.session  # here: a job without a secret loads no botocore (entrypoint/job/smpaths.py)

    return botocore.session.Session().get_config_variable("region")
