"""The job's region (hpo_study/database/region.py) with a moto server: what reaches AWS."""

from __future__ import annotations

import pytest

from hpo_study import settings as settings_mod
from hpo_study.database import locate
from tests.support import services


def _read_secret(secret: str, tmp_path) -> str:
    """What a job does with its hyperparameters: resolve the database, reading the secret."""
    settings = settings_mod.parse({"db-secret": secret})
    return locate.resolve(settings, tmp_path).password


@pytest.mark.services
def test_a_job_with_only_aws_region_reads_its_secret(aws, no_region, tmp_path):
    name = aws({"username": "u", "password": "pw-1", "host": "db.example"})
    no_region.setenv("AWS_REGION", services.REGION)  # boto3 alone does not read AWS_REGION
    assert _read_secret(name, tmp_path) == "pw-1"


@pytest.mark.services
def test_a_job_without_region_variables_reads_a_secret_given_as_an_arn(aws, no_region, tmp_path):
    import boto3

    name = aws({"username": "u", "password": "pw-2", "host": "db.example"})
    arn = boto3.client("secretsmanager", region_name=services.REGION).describe_secret(SecretId=name)["ARN"]
    assert _read_secret(arn, tmp_path) == "pw-2"
    with pytest.raises(Exception, match="No AWS region for secret"):
        _read_secret(name, tmp_path)  # by name, nothing says where it is
