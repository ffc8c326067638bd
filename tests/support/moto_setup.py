"""What an administrator sets up on the moto server before a test: the environment that points
boto3 at it, IAM users with a policy and keys, a secret, a recorded training job."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.support import services

ADMIN_SETUP_CALLS = 3  # create_user, put_user_policy, create_access_key: the calls before IAM is enforced


def use_moto(monkeypatch: pytest.MonkeyPatch, endpoint: str, **extra: str) -> None:
    """Point boto3 (here and in child processes) at the moto server for one test."""
    for key, value in {**services.aws_env(endpoint), **extra}.items():
        monkeypatch.setenv(key, value)


def allow(actions: list[str] | str) -> dict:
    """An IAM policy that allows `actions` on every resource."""
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}


def iam_user(iam, name: str, policy: dict | str | None) -> dict[str, str]:
    """Create an IAM user holding `policy` (none: no rights) and return its keys as boto3 arguments."""
    iam.create_user(UserName=name)
    if policy is not None:
        doc = policy if isinstance(policy, str) else json.dumps(policy)
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=doc)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}


def key_env(keys: dict[str, str]) -> dict[str, str]:
    """Keys from `iam_user` as the environment variables boto3 reads."""
    return {
        "AWS_ACCESS_KEY_ID": keys["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": keys["aws_secret_access_key"],
    }


def create_secret(secretsmanager, name: str, document: dict | str) -> str:
    """Store a secret (a JSON document, or a string as it is); return its ARN."""
    body = document if isinstance(document, str) else json.dumps(document)
    return secretsmanager.create_secret(Name=name, SecretString=body)["ARN"]


def create_training_job(sagemaker, name: str, image: str, role: str, output_path: str) -> None:
    """Record a training job as CreateTrainingJob would (moto marks it Completed at once)."""
    sagemaker.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": image, "TrainingInputMode": "File"},
        RoleArn=role,
        OutputDataConfig={"S3OutputPath": output_path},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
    )


def upload_model(s3, model_dir: Path, uri: str) -> None:
    """``model_dir`` as SageMaker leaves it: a model.tar.gz at ``uri`` (moto's S3)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    s3.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
