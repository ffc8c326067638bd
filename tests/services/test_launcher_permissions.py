"""Missing permissions name the IAM action: a moto server that enforces IAM, users with a few
rights each, and a real MariaDB study."""

from __future__ import annotations

import uuid

import boto3
import pytest

from tests.support import services
from tests.support.cli import IMAGE, ROLE, launch_args, run_cli
from tests.support.moto_setup import (
    ADMIN_SETUP_CALLS,
    allow,
    create_secret,
    create_training_job,
    iam_user,
    key_env,
    use_moto,
)

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def enforcing_moto():
    """A moto server that checks every call against IAM, once an admin user exists."""
    with services.moto_server(iam_after=ADMIN_SETUP_CALLS) as url:
        yield url


@pytest.fixture
def world(enforcing_moto, mysql_db, monkeypatch):
    """An admin sets up a secret, a bucket, a training job and a study; returns a user maker."""
    use_moto(monkeypatch, enforcing_moto, AWS_ENDPOINT_URL_IAM=enforcing_moto)
    suffix = uuid.uuid4().hex[:8]
    session = boto3.session.Session(region_name=services.REGION, **_admin(enforcing_moto))
    secret = f"perm/{suffix}"
    create_secret(session.client("secretsmanager"), secret, mysql_db.secret_document())
    bucket = f"perm-{suffix}"
    session.client("s3").create_bucket(Bucket=bucket)
    job = f"perm-job-{suffix}"
    create_training_job(session.client("sagemaker"), job, IMAGE, ROLE, f"s3://{bucket}/output")
    mysql_db.study_with_trials("perm", [(job, 0.9)])
    admin_iam = session.client("iam")

    def as_user(*actions: str) -> list[str]:
        keys = iam_user(admin_iam, f"u-{uuid.uuid4().hex[:8]}", allow(list(actions)) if actions else None)
        for key, value in key_env(keys).items():
            monkeypatch.setenv(key, value)
        return ["--study", "perm", "--db-secret", secret, "--db-port", str(mysql_db.port)]

    as_user.bucket = bucket  # type: ignore[attr-defined]
    return as_user


_ADMIN: dict[str, dict[str, str]] = {}


def _admin(url: str) -> dict[str, str]:
    """The admin's keys, made with the server's unauthenticated calls (once per server)."""
    if url not in _ADMIN:
        iam = boto3.session.Session(region_name=services.REGION).client("iam")
        _ADMIN[url] = iam_user(iam, "admin", allow(["*"]))
    return _ADMIN[url]


GET_SECRET = "secretsmanager:GetSecretValue"
DESCRIBE_JOB = "sagemaker:DescribeTrainingJob"


def test_launch_without_create_training_job(world):
    world()
    result = run_cli(*launch_args(world.bucket, "s"), "--job-prefix", "denied")
    assert result.code == 1
    assert "Not allowed to sagemaker:CreateTrainingJob" in result.err, result.err


def test_status_without_get_secret_value(world):
    args = world()
    result = run_cli("status", *args)
    assert result.code == 1 and "Not allowed to secretsmanager:GetSecretValue" in result.err, result.err
    assert "training role" not in result.err  # it is the caller who lacks the right here


def test_best_and_status_without_describe_training_job(world):
    args = world(GET_SECRET)
    assert run_cli("status", *args).code == 0
    for command in (["best", *args], ["status", *args, "--describe-jobs"]):
        result = run_cli(*command)
        assert result.code == 1 and "Not allowed to sagemaker:DescribeTrainingJob" in result.err, result.err


def test_best_without_reading_the_model(world):
    args = world(GET_SECRET, DESCRIBE_JOB)
    result = run_cli("best", *args)
    assert result.code == 1 and "Not allowed to s3:GetObject" in result.err, result.err
    assert run_cli("best", *args, "--no-verify").code == 0


def test_deploy_without_create_model(world):
    args = world(GET_SECRET, DESCRIBE_JOB, "sagemaker:DescribeEndpoint")
    result = run_cli("deploy", *args, "--no-verify")
    assert result.code == 1 and "Not allowed to sagemaker:CreateModel" in result.err, result.err
