"""Missing permissions name the IAM action: a moto server that enforces IAM, users with a few
rights each, and a real MariaDB study."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
import uuid

import boto3
import optuna
import pytest

from tests import services
from tests.cli import IMAGE, ROLE, launch_args, run_cli

pytestmark = pytest.mark.services

ADMIN_SETUP_CALLS = 3  # create_user, put_user_policy, create_access_key: before IAM is enforced


def _policy(actions: list[str]) -> str:
    return json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
    )


def _user(iam, name: str, actions: list[str]) -> dict[str, str]:
    iam.create_user(UserName=name)
    if actions:
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=_policy(actions))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


@pytest.fixture(scope="module")
def enforcing_moto():
    """A moto server that checks every call against IAM, once an admin user exists."""
    port = services.free_port()
    proc = subprocess.Popen(
        [str(services.VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(ADMIN_SETUP_CALLS)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        services.wait_for(lambda: urllib.request.urlopen(f"{url}/moto-api/", timeout=1), 30, "moto")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def world(enforcing_moto, mysql_db, monkeypatch):
    """An admin sets up a secret, a bucket, a training job and a study; returns a user maker."""
    for key, value in {**services.aws_env(enforcing_moto), "AWS_ENDPOINT_URL_IAM": enforcing_moto}.items():
        monkeypatch.setenv(key, value)
    admin = _admin(enforcing_moto)
    suffix = uuid.uuid4().hex[:8]
    session = boto3.session.Session(region_name=services.REGION, **_keys(admin))
    secret = f"perm/{suffix}"
    doc = {
        "username": mysql_db.user,
        "password": mysql_db.password,
        "host": mysql_db.host,
        "dbname": mysql_db.name,
    }
    session.client("secretsmanager").create_secret(Name=secret, SecretString=json.dumps(doc))
    bucket = f"perm-{suffix}"
    session.client("s3").create_bucket(Bucket=bucket)
    job = f"perm-job-{suffix}"
    session.client("sagemaker").create_training_job(
        TrainingJobName=job,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        RoleArn=ROLE,
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
    )
    url = f"mysql+mysqlconnector://{mysql_db.user}@{mysql_db.host}:{mysql_db.port}/{mysql_db.name}"
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"password": mysql_db.password}})
    study = optuna.create_study(study_name="perm", storage=storage, direction="maximize")
    trial = study.ask()
    trial.set_user_attr("job_name", job)
    study.tell(trial, 0.9)
    storage.engine.dispose()
    admin_iam = session.client("iam")

    def as_user(*actions: str) -> list[str]:
        keys = _user(admin_iam, f"u-{uuid.uuid4().hex[:8]}", list(actions))
        for key, value in keys.items():
            monkeypatch.setenv(key, value)
        return ["--study", "perm", "--db-secret", secret, "--db-port", str(mysql_db.port)]

    as_user.bucket = bucket  # type: ignore[attr-defined]
    return as_user


_ADMIN: dict[str, dict[str, str]] = {}


def _keys(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
    }


def _admin(url: str) -> dict[str, str]:
    """The admin's keys, made with the server's unauthenticated calls (once per server)."""
    if url not in _ADMIN:
        iam = boto3.session.Session(region_name=services.REGION).client("iam")
        _ADMIN[url] = _user(iam, "admin", ["*"])
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
