"""The job's region (hpo_study/database/region.py): found without relying on one variable."""

from __future__ import annotations

import pytest

from hpo_study.database import region
from tests.support.cli import run_cli

SECRET_ARN = "arn:aws:secretsmanager:eu-west-3:123456789012:secret:hpo/db-AbCdEf"
JOB_ARN = "arn:aws:sagemaker:ap-southeast-2:123456789012:training-job/digits-1"


@pytest.mark.unit
@pytest.mark.parametrize(
    "hp, secret, env, expected",
    [
        ("us-west-2", SECRET_ARN, {"TRAINING_JOB_ARN": JOB_ARN, "AWS_REGION": "eu-north-1"}, "us-west-2"),
        (None, SECRET_ARN, {"TRAINING_JOB_ARN": JOB_ARN, "AWS_REGION": "eu-north-1"}, "eu-west-3"),
        (None, "hpo/db", {"TRAINING_JOB_ARN": JOB_ARN, "AWS_REGION": "eu-north-1"}, "ap-southeast-2"),
        (None, "hpo/db", {"AWS_REGION": "eu-north-1", "AWS_DEFAULT_REGION": "sa-east-1"}, "eu-north-1"),
        (None, "hpo/db", {"AWS_DEFAULT_REGION": "sa-east-1"}, "sa-east-1"),
        (None, "hpo/db", {}, None),
        (None, "arn:aws:iam::123456789012:role/x", {}, None),  # IAM ARNs name no region
    ],
)
def test_order(no_region, hp, secret, env, expected):
    for key, value in env.items():
        no_region.setenv(key, value)
    assert region.resolve(hp, secret) == expected


@pytest.mark.unit
def test_config_file_is_the_last_resort(no_region, tmp_path):
    config = tmp_path / "config"
    config.write_text("[default]\nregion = ca-central-1\n")
    no_region.setenv("AWS_CONFIG_FILE", str(config))
    assert region.resolve(None, "hpo/db") == "ca-central-1"


@pytest.mark.unit
def test_arn_region():
    assert region.arn_region(SECRET_ARN) == "eu-west-3"
    assert (
        region.arn_region("arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:x")
        == "us-gov-west-1"
    )
    assert region.arn_region("hpo/db") is None and region.arn_region(None) is None


@pytest.mark.unit
def test_launch_passes_its_region_with_a_secret_given_by_name():
    base = [
        "launch", "--study", "s", "--image", "i", "--role", "arn:aws:iam::123456789012:role/r",
        "--output", "s3://b/o", "--channel", "train=s3://b/d/train", "--channel", "test=s3://b/d/test",
        "--instance-type", "ml.m5.large", "--dry-run", "--region", "eu-west-3",
    ]  # fmt: skip
    by_name = run_cli(*base, "--db-secret", "hpo/db")
    assert by_name.code == 0, by_name.err
    assert by_name.json()[0]["HyperParameters"]["region-name"] == "eu-west-3"
    by_arn = run_cli(*base, "--db-secret", SECRET_ARN)
    assert "region-name" not in by_arn.json()[0]["HyperParameters"]
    given = run_cli(*base, "--db-secret", "hpo/db", "--hp", "region_name=us-east-2")
    assert given.json()[0]["HyperParameters"]["region_name"] == "us-east-2"
    assert "region-name" not in given.json()[0]["HyperParameters"]
