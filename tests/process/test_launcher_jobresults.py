"""`status`, `best` and `deploy` from a laptop with no path to the database: what the jobs left in
SageMaker (their final metrics, their live CloudWatch metrics) and S3 (model.tar.gz).

The module's fleet: `launch` creates 3 jobs in a moto server (tests/support/moto_training.py: a job
reports its status and final metrics from its log, as SageMaker does). Two are run for real
with `train` on one MariaDB study (the jobs' secret reaches it, as jobs in the VPC do); their
logs and model folders go where SageMaker puts them. The third is still InProgress: its
metrics are in moto's CloudWatch, as SageMaker publishes them while a job runs. The laptop's
secret names the same database on a port where nothing listens: unreachable.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import uuid
from pathlib import Path

import boto3
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from core import ranking
from devtools.localjob import write_job_folder
from launcher.constants import CLOUDWATCH_JOB_DIMENSION, CLOUDWATCH_NAMESPACE
from tests.support import services
from tests.support.cli import STUDY, launch_args, run_cli
from tests.support.jobs import VENV_BIN, train_env
from tests.support.moto_setup import create_secret, upload_model, use_moto

pytestmark = pytest.mark.process


@dataclasses.dataclass
class Fleet:
    endpoint: str
    db: services.MySqlDatabase
    laptop_secret: str  # the same database on a closed port
    jobs: list[str]  # two run for real, the third still InProgress
    logs: Path
    models: dict[str, Path]  # the model folders of the jobs run for real
    bucket: str

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=STUDY, storage=self.db.optuna_storage())

    def truth(self) -> optuna.trial.FrozenTrial:
        """The study's best trial as the database says (core/ranking.py's rule)."""
        complete = self.study().get_trials(states=(TrialState.COMPLETE,))
        return ranking.best("maximize", complete, lambda t: t.value)


def reported(value: float) -> float:
    """A metric's value as SageMaker reports it: a 32-bit float."""
    return float(np.float32(value))


def put_live_metrics(job: str, **values: float) -> None:
    """What SageMaker publishes to CloudWatch from a running job's metric lines."""
    boto3.client("cloudwatch", region_name=services.REGION).put_metric_data(
        Namespace=CLOUDWATCH_NAMESPACE,
        MetricData=[
            {
                "MetricName": name.replace("_", ":", 1),
                "Dimensions": [{"Name": CLOUDWATCH_JOB_DIMENSION, "Value": job}],
                "Timestamp": dt.datetime.now(dt.UTC),
                "Value": value,
            }
            for name, value in values.items()
        ],
    )


@pytest.fixture(scope="module")
def fleet(small_digits, tmp_path_factory):
    logs = tmp_path_factory.mktemp("joblogs")
    with (
        services.moto_server(training_logs=logs) as endpoint,
        pytest.MonkeyPatch.context() as mp,
        services.mysql_database() as db,
    ):
        use_moto(mp, endpoint)
        bucket = f"jobresults-{uuid.uuid4().hex[:8]}"
        s3 = boto3.client("s3", region_name=services.REGION)
        s3.create_bucket(Bucket=bucket)
        secrets = boto3.client("secretsmanager", region_name=services.REGION)
        jobs_secret = create_secret(secrets, "jobs-db", db.secret_document(engine="mariadb"))
        closed = services.free_port()
        laptop_secret = create_secret(
            secrets, "laptop-db", {**db.secret_document(engine="mariadb"), "port": closed}
        )
        launched = run_cli(
            *launch_args(bucket, laptop_secret),
            "--jobs", "3", "--hp", "n-trials=3", "--hp", "epochs=1", "--hp", "seed=3", "--json",
        )  # fmt: skip
        assert launched.code == 0, launched.err
        names = [row["job"] for row in launched.json()["jobs"]]
        sagemaker = boto3.client("sagemaker", region_name=services.REGION)
        for name in names[:2]:
            hps = dict(sagemaker.describe_training_job(TrainingJobName=name)["HyperParameters"])
            hps["db-secret"] = jobs_secret  # inside the VPC the jobs reach the database
            folder = write_job_folder(tmp_path_factory.getbasetemp() / name, hps, small_digits)
            env = train_env(folder, TRAINING_JOB_NAME=name, **services.aws_env(endpoint))
            proc = subprocess.run(
                [str(VENV_BIN / "train")], env=env, capture_output=True, text=True, timeout=300
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
            (logs / f"{name}.log").write_text(proc.stdout)
            uri = sagemaker.describe_training_job(TrainingJobName=name)["ModelArtifacts"]["S3ModelArtifacts"]
            upload_model(s3, folder / "model", uri)
        models = {name: tmp_path_factory.getbasetemp() / name for name in names[:2]}
        running = names[2]
        (logs / f"{running}.log").write_text("job_trials=1 model_trial=99 model_value=0.01\n")
        (logs / f"{running}.status").write_text("InProgress")
        put_live_metrics(running, job_trials=1, model_trial=99, model_value=0.01)
        yield Fleet(endpoint, db, laptop_secret, names, logs, models, bucket)


def _laptop(*argv: str):
    return run_cli(*argv, "--study", STUDY, "--json")


def test_jobs_report_their_model_and_the_study_best_in_final_metrics(fleet):
    sagemaker = boto3.client("sagemaker", region_name=services.REGION)
    study = fleet.study()
    for name in fleet.jobs[:2]:
        final = {
            m["MetricName"]: m["Value"]
            for m in sagemaker.describe_training_job(TrainingJobName=name)["FinalMetricDataList"]
        }
        own = [t for t in study.trials if t.user_attrs.get("job_name") == name]
        kept = ranking.best("maximize", [t for t in own if t.state == TrialState.COMPLETE], lambda t: t.value)
        assert final["job:trials"] == len(own) == 3
        assert (final["model:trial"], final["model:value"]) == (kept.number, reported(kept.value))
    # The second job ended last: it saw the whole study.
    final = {
        m["MetricName"]: m["Value"]
        for m in sagemaker.describe_training_job(TrainingJobName=fleet.jobs[1])["FinalMetricDataList"]
    }
    assert (final["best:trial"], final["best:value"]) == (fleet.truth().number, reported(fleet.truth().value))


def test_status_without_a_path_to_the_database_reads_the_jobs(fleet):
    result = _laptop("status", "--db-secret", fleet.laptop_secret)
    assert result.code == 0, result.err
    assert "Source: training jobs (SageMaker and S3), since the study database" in result.err
    assert "does not answer from here" in result.err
    doc = result.json()
    assert doc["source"] == "training jobs (SageMaker and S3)"
    rows = {row["job"]: row for row in doc["jobs"]}
    assert [rows[n]["status"] for n in fleet.jobs] == ["Completed", "Completed", "InProgress"]
    assert [rows[n]["trials"] for n in fleet.jobs] == [3, 3, 1]
    assert [rows[n]["from"] for n in fleet.jobs] == ["final metrics", "final metrics", "cloudwatch"]
    assert doc["trials"] == 7
    truth = fleet.truth()
    assert doc["best"] == {
        "trial": truth.number,
        "value": reported(truth.value),
        "job": truth.user_attrs["job_name"],
    }
    assert doc["study_best_reported"]["trial"] == truth.number

    text = run_cli("status", "--study", STUDY, "--db-secret", fleet.laptop_secret)
    assert text.code == 0 and f"Best: trial {truth.number}," in text.out and "InProgress" in text.out


def test_best_and_deploy_without_a_database_deploy_the_study_best_model(fleet):
    truth = fleet.truth()
    best = _laptop("best", "--db-secret", fleet.laptop_secret)
    assert best.code == 0, best.err
    doc = best.json()
    assert doc["source"].startswith("training jobs")
    assert (doc["trial"], doc["value"], doc["job"]) == (
        truth.number,
        reported(truth.value),
        truth.user_attrs["job_name"],
    )
    assert doc["model_trial"] == truth.number and doc["params"] == truth.params

    deployed = _laptop("deploy", "--source", "jobs", "--endpoint-name", f"ep-{uuid.uuid4().hex[:6]}")
    assert deployed.code == 0, deployed.err
    sagemaker = boto3.client("sagemaker", region_name=services.REGION)
    model = sagemaker.describe_model(ModelName=deployed.json()["model_name"])
    job = sagemaker.describe_training_job(TrainingJobName=truth.user_attrs["job_name"])
    assert model["PrimaryContainer"]["ModelDataUrl"] == job["ModelArtifacts"]["S3ModelArtifacts"]
    assert deployed.json()["trial"] == truth.number


def test_with_host_or_a_reachable_database_the_study_is_read(fleet):
    with_host = _laptop(
        "status", "--db-secret", fleet.laptop_secret, "--host", "127.0.0.1", "--db-port", str(fleet.db.port)
    )
    assert with_host.code == 0, with_host.err
    assert with_host.json()["source"] == "the study database" and with_host.json()["trials"] == 6
    forced = _laptop("best", "--db-secret", fleet.laptop_secret, "--source", "study", "--no-verify")
    assert forced.code == 1 and "Cannot read the study database" in forced.err, forced.err


def test_jobs_launched_without_the_metric_definitions_are_read_from_model_json(fleet):
    """E.g. an SDK Estimator without metric_definitions: no final metrics, the archive says."""
    sagemaker = boto3.client("sagemaker", region_name=services.REGION)
    s3 = boto3.client("s3", region_name=services.REGION)
    prefix = f"sdk-{uuid.uuid4().hex[:6]}"
    for name in (f"{prefix}-with-model", f"{prefix}-without"):
        sagemaker.create_training_job(
            TrainingJobName=name,
            HyperParameters={"study-name": f'"{STUDY}"'},  # SDK v2 JSON-encodes values
            AlgorithmSpecification={"TrainingImage": "i", "TrainingInputMode": "File"},
            RoleArn="arn:aws:iam::123456789012:role/r",
            OutputDataConfig={"S3OutputPath": f"s3://{fleet.bucket}/sdk"},
            ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
            StoppingCondition={"MaxRuntimeInSeconds": 600},
        )
    uri = sagemaker.describe_training_job(TrainingJobName=f"{prefix}-with-model")["ModelArtifacts"][
        "S3ModelArtifacts"
    ]
    upload_model(s3, fleet.models[fleet.jobs[0]] / "model", uri)
    status = _laptop("status", "--source", "jobs", "--job-prefix", prefix)
    assert status.code == 0, status.err
    rows = {row["job"]: row for row in status.json()["jobs"]}
    kept = json.loads((fleet.models[fleet.jobs[0]] / "model" / "model.json").read_text())
    assert rows[f"{prefix}-with-model"]["from"] == "model.json"
    assert (rows[f"{prefix}-with-model"]["model_trial"], rows[f"{prefix}-with-model"]["best"]) == (
        kept["trial_number"],
        reported(kept["value"]),
    )
    assert rows[f"{prefix}-without"]["from"] is None
    assert any("does not exist" in note for note in status.json()["notes"])
    best = _laptop("best", "--source", "jobs", "--job-prefix", prefix)
    assert best.code == 0 and best.json()["job"] == f"{prefix}-with-model", best.err


def test_a_running_job_with_a_better_model_is_not_passed_over(fleet):
    """Last in the module: the running job's CloudWatch series now holds a better model."""
    put_live_metrics(fleet.jobs[2], job_trials=2, model_trial=100, model_value=1.0)
    status = _laptop("status", "--source", "jobs")
    assert status.code == 0, status.err
    assert status.json()["best"] == {"trial": 100, "value": 1.0, "job": fleet.jobs[2]}
    best = _laptop("best", "--source", "jobs")
    assert best.code == 1 and f"is kept by training job '{fleet.jobs[2]}', still InProgress" in best.err
