"""`sagemaker-optuna` against a moto server over HTTP (SageMaker, S3, Secrets Manager) and a real
MariaDB: launch requests, mistakes refused before any job, embedded study files."""

from __future__ import annotations

import contextlib
import uuid

import boto3
import optuna
import pytest

from tests.support import services
from tests.support.cli import STUDY, launch_args, run_cli
from tests.support.moto_setup import create_secret


@pytest.mark.services
def test_vpc_spot_checkpoints_and_wait(aws_env):
    bucket = f"launcher-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", region_name=services.REGION).create_bucket(Bucket=bucket)
    result = run_cli(
        *launch_args(bucket, "any/secret"),
        "--jobs", "3",
        "--job-prefix", "spot",
        "--subnet", "subnet-1", "--subnet", "subnet-2",
        "--security-group", "sg-1",
        "--max-runtime", "600",
        "--spot", "--checkpoint-s3", f"s3://{bucket}/checkpoints/",
        "--tag", "team=hpo",
        "--wait", "--poll", "0.1", "--timeout", "30",
    )  # fmt: skip
    assert result.code == 0, result.err
    rows = [line.split() for line in result.out.splitlines()]
    assert rows[0][:2] == ["job", "status"] and [r[1] for r in rows[1:]] == ["Completed"] * 3
    sagemaker = boto3.client("sagemaker", region_name=services.REGION)
    for row in rows[1:]:
        job = sagemaker.describe_training_job(TrainingJobName=row[0])
        assert job["VpcConfig"] == {"Subnets": ["subnet-1", "subnet-2"], "SecurityGroupIds": ["sg-1"]}
        assert job["EnableManagedSpotTraining"] is True
        assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 1200}
        assert job["CheckpointConfig"]["S3Uri"] == f"s3://{bucket}/checkpoints/{row[0]}"
    assert "Completed" in result.err  # progress lines go to stderr, the table to stdout


@pytest.mark.services
@pytest.mark.parametrize(
    "change, message",
    [
        (["--hp", "n-trails=3"], "unknown hyperparameter 'n-trails'"),
        (["--hp", "epochs=0"], "hyperparameter 'epochs' must be an integer"),
        (["--hp", "db_secret=x"], "'db_secret' is given twice"),
        (["--hp", "seed=1", "--hp", "seed=2"], "'seed' is given twice"),
        (["--jobs", "2", "--db-secret", ""], "2 jobs can only share a study in a database"),
        (["--role", "optuna-training"], "--role must be an IAM role ARN"),
        (["--output", "bucket/prefix"], "--output must be an s3://bucket/prefix URI"),
        (["--subnet", "subnet-1"], "A VPC needs both --subnet and --security-group"),
        (["--spot"], "--spot needs --checkpoint-s3"),
        (["--spot", "--checkpoint-s3", "s3://b/c", "--max-wait", "10"], "--max-wait must be at least"),
        (["--checkpoint-s3", "s3://b/c"], "only apply with --spot"),
    ],
)
def test_mistakes_fail_before_any_job_is_created(aws_env, change, message):
    sagemaker = boto3.client("sagemaker", region_name=services.REGION)
    before = len(sagemaker.list_training_jobs(MaxResults=100)["TrainingJobSummaries"])
    args = launch_args("bucket", "some/secret", "--job-prefix", "mistake", *change)
    result = run_cli(*args)
    assert result.code == 1 and message in result.err, result.err
    assert result.err.startswith("sagemaker-optuna: error: ") and "Traceback" not in result.err
    assert len(sagemaker.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]) == before


@pytest.mark.services
def test_database_without_optuna_tables_is_not_touched(aws_env):
    with services.mysql_database() as empty:
        secret = f"test/launcher/{uuid.uuid4().hex[:8]}"
        secrets = boto3.client("secretsmanager", region_name=services.REGION)
        create_secret(secrets, secret, empty.credentials(host=empty.host, dbname=empty.name))
        result = run_cli("status", "--study", STUDY, "--db-secret", secret, "--db-port", str(empty.port))
        assert result.code == 1 and "holds no Optuna studies (wrong database or --db-name?)" in result.err
        with contextlib.closing(empty.connect()) as conn, contextlib.closing(conn.cursor()) as cur:
            cur.execute("SHOW TABLES")
            assert cur.fetchall() == []  # read-only: no schema was created
        wrong = run_cli("status", "--study", STUDY, "--db-secret", secret, "--db-name", "no_such_db")
        assert wrong.code == 1 and "Cannot read the study database" in wrong.err and "no_such_db" in wrong.err


@pytest.mark.services
def test_unknown_secret(aws_env):
    result = run_cli("best", "--study", "s", "--db-secret", "no/such/secret")
    assert result.code == 1 and "Secret 'no/such/secret' does not exist" in result.err


@pytest.mark.services
def test_embedded_study_file_from_output_tar(tmp_path, aws_env):
    path = tmp_path / "optuna-study.db"
    study = optuna.create_study(study_name="local", storage=f"sqlite:///{path}", direction="maximize")
    for value in (0.5, 0.7):
        trial = study.ask()
        trial.set_user_attr("job_name", "local-job")
        study.tell(trial, value)
    result = run_cli("status", "--study", "local", "--storage", f"sqlite:///{path}", "--json")
    assert result.code == 0, result.err
    assert result.json()["best"] == {"trial": 1, "value": 0.7, "params": {}, "job": "local-job"}
    missing = tmp_path / "nothing.db"
    result = run_cli("status", "--study", "local", "--storage", f"sqlite:///{missing}")
    assert result.code == 1 and "holds no Optuna studies" in result.err and not missing.exists()
