"""`sagemaker-optuna` against real services: a moto server over HTTP (SageMaker, S3, Secrets
Manager) and a real MariaDB study filled by real `train` processes.

The module's fleet: `launch` creates 2 training jobs in moto (which marks them Completed at
once and runs nothing), then each job is run for real with `train`, its job name and the
hyperparameters moto recorded, and its model folder is uploaded as the job's model.tar.gz,
as SageMaker would. `status`, `best` and `deploy` then read that study and those jobs.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import subprocess
import tarfile
import uuid

import boto3
import optuna
import pytest

from devtools.localjob import write_job_folder
from launcher import names
from launcher.constants import METRIC_DEFINITIONS
from tests.support import services
from tests.support.cli import IMAGE, ROLE, STUDY, launch_args, run_cli
from tests.support.jobs import VENV_BIN, train_env
from tests.support.moto_setup import create_secret, upload_model


@dataclasses.dataclass
class Fleet:
    bucket: str
    secret: str
    db: services.MySqlDatabase
    jobs: list[str]
    logs: dict[str, str]

    def study_args(self, study: str = STUDY) -> list[str]:
        return ["--study", study, "--db-secret", self.secret]


@pytest.fixture(scope="module")
def fleet(aws_env, small_digits, tmp_path_factory):
    """Two jobs launched by the CLI, run for real on one MariaDB study, models on S3."""
    bucket = f"launcher-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", region_name=services.REGION)
    s3.create_bucket(Bucket=bucket)
    sagemaker = boto3.client("sagemaker", region_name=services.REGION)
    with services.mysql_database() as db:
        secret = f"test/launcher/{uuid.uuid4().hex[:8]}"
        secrets = boto3.client("secretsmanager", region_name=services.REGION)
        create_secret(secrets, secret, db.secret_document(engine="mariadb"))
        launched = run_cli(
            *launch_args(bucket, secret),
            "--jobs", "2",
            "--hp", "n-trials=2",
            "--hp", "epochs=1",
            "--hp", "seed=7",
            "--json",
        )  # fmt: skip
        assert launched.code == 0, launched.err
        job_names = [row["job"] for row in launched.json()["jobs"]]
        # The first job runs for real; to keep the test fast the second one's trials are told
        # directly, with worse values, so the study's best model is in the first job's archive.
        first = job_names[0]
        hps = sagemaker.describe_training_job(TrainingJobName=first)["HyperParameters"]
        folder = write_job_folder(tmp_path_factory.mktemp("fleet") / first, hps, small_digits)
        env = train_env(folder, TRAINING_JOB_NAME=first, **services.aws_env(aws_env))
        proc = subprocess.run([str(VENV_BIN / "train")], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        logs = {first: proc.stdout}
        uri = sagemaker.describe_training_job(TrainingJobName=first)["ModelArtifacts"]["S3ModelArtifacts"]
        upload_model(s3, folder / "model", uri)
        study = _study(db)
        for _ in range(2):
            trial = study.ask()
            trial.set_user_attr("job_name", job_names[1])
            study.tell(trial, 0.0)
        yield Fleet(bucket, secret, db, job_names, logs)


def _study(db: services.MySqlDatabase, name: str = STUDY) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=db.optuna_storage())


# --- launch ------------------------------------------------------------------------------------


@pytest.mark.process
def test_launch_sends_one_valid_request_per_job(fleet):
    sagemaker = boto3.client("sagemaker", region_name=services.REGION)
    assert len(fleet.jobs) == 2 and len(set(fleet.jobs)) == 2
    for i, name in enumerate(fleet.jobs):
        assert names.VALID.match(name) and name.startswith("digits-launcher-1-") and name.endswith(f"-{i}")
        job = sagemaker.describe_training_job(TrainingJobName=name)
        assert job["HyperParameters"] == {
            "study-name": STUDY,
            "db-secret": fleet.secret,
            "n-trials": "2",
            "epochs": "1",
            "seed": "7",
            "region-name": services.REGION,  # the secret is given by name: the command's region
        }
        assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE
        assert job["RoleArn"] == ROLE
        assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{fleet.bucket}/output"
        assert {
            c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]
        } == {
            "train": f"s3://{fleet.bucket}/data/train",
            "test": f"s3://{fleet.bucket}/data/test",
        }
        assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}
        assert not job["EnableManagedSpotTraining"] and not job.get("VpcConfig")


@pytest.mark.process
def test_the_real_job_ran_its_trials_under_its_own_name(fleet):
    trials = _study(fleet.db).trials
    assert len(trials) == 4
    assert sorted(t.user_attrs["job_name"] for t in trials) == sorted(fleet.jobs * 2)
    assert all(t.params for t in trials if t.user_attrs["job_name"] == fleet.jobs[0])


@pytest.mark.process
def test_metric_definitions_match_the_lines_real_jobs_print(fleet):
    log = fleet.logs[fleet.jobs[0]]
    epoch_line = next(line for line in log.splitlines() if re.match(r"trial=\d+ epoch=1 ", line))
    fields = dict(item.split("=", 1) for item in epoch_line.split())
    expected = {
        "train:loss": fields["loss"],
        "train:accuracy": fields["accuracy"],
        "validation:loss": fields["validation_loss"],
        "validation:accuracy": fields["validation_accuracy"],
    }
    for metric in METRIC_DEFINITIONS:
        if metric["Name"] in expected:
            assert re.search(metric["Regex"], epoch_line).group(1) == expected[metric["Name"]], metric
    best_line = next(line for line in log.splitlines() if line.startswith("best_trial="))
    best = next(m for m in METRIC_DEFINITIONS if m["Name"] == "best:value")
    assert float(re.search(best["Regex"], best_line).group(1)) > 0


@pytest.mark.process
def test_usage_errors_exit_2_from_the_console_script():
    script = str(VENV_BIN / "sagemaker-optuna")
    missing = subprocess.run([script, "launch", "--study", "s"], capture_output=True, text=True)
    assert missing.returncode == 2 and "--image" in missing.stderr
    ok = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and all(c in ok.stdout for c in ("launch", "status", "best", "deploy"))
    assert run_cli("status", "--study", "s", "--bogus").code == 2
    assert run_cli("launch", "--jobs", "0").code == 2


# --- status ------------------------------------------------------------------------------------


@pytest.mark.process
def test_status_counts_trials_and_names_the_jobs(fleet):
    result = run_cli("status", *fleet.study_args(), "--describe-jobs", "--json")
    assert result.code == 0, result.err
    doc = result.json()
    study = _study(fleet.db)
    assert doc["study"] == STUDY and doc["direction"] == "maximize" and doc["trials"] == 4
    assert doc["states"]["COMPLETE"] + doc["states"]["PRUNED"] == 4 and doc["states"]["FAIL"] == 0
    assert doc["best"]["trial"] == study.best_trial.number and doc["best"]["value"] == study.best_value
    assert doc["best"]["job"] == study.best_trial.user_attrs["job_name"]
    assert sorted(j["job"] for j in doc["jobs"]) == sorted(fleet.jobs)
    assert all(j["trials"] == 2 and j["status"] == "Completed" for j in doc["jobs"])
    assert max(j["best"] for j in doc["jobs"]) == study.best_value


@pytest.mark.process
def test_status_as_text(fleet):
    result = run_cli("status", *fleet.study_args())
    assert result.code == 0, result.err
    assert f"Study '{STUDY}' (maximize): 4 trials" in result.out
    assert "Best: trial " in result.out and all(name in result.out for name in fleet.jobs)


@pytest.mark.process
def test_unknown_study_lists_the_studies_there(fleet):
    result = run_cli("status", *fleet.study_args("no-such-study"))
    assert result.code == 1
    assert f"No study 'no-such-study' in mysql+mysqlconnector://{fleet.db.user}@" in result.err
    assert f"studies there: {STUDY}" in result.err


# --- best --------------------------------------------------------------------------------------


@pytest.mark.process
def test_best_names_the_model_of_the_best_trial(fleet):
    result = run_cli("best", *fleet.study_args(), "--json")
    assert result.code == 0, result.err
    doc = result.json()
    study = _study(fleet.db)
    best = study.best_trial
    job = boto3.client("sagemaker", region_name=services.REGION).describe_training_job(
        TrainingJobName=best.user_attrs["job_name"]
    )
    assert doc["trial"] == best.number and doc["value"] == best.value and doc["params"] == best.params
    assert doc["job"] == job["TrainingJobName"] and doc["job_status"] == "Completed"
    assert doc["model_data_url"] == job["ModelArtifacts"]["S3ModelArtifacts"]
    assert doc["model_data_url"].startswith(f"s3://{fleet.bucket}/output/{doc['job']}/")
    # the archive holds that trial (or one of equal value: a job keeps the first of a tie)
    held = doc["model_trial"]
    assert held == best.number or study.trials[held].value == best.value
    text = run_cli("best", *fleet.study_args())
    assert text.code == 0 and doc["model_data_url"] in text.out


@pytest.mark.process
def test_job_that_wrote_no_model(fleet):
    """moto reports every job Completed with a ModelArtifacts URI; here nothing was uploaded."""
    launched = run_cli(*launch_args(fleet.bucket, fleet.secret), "--job-prefix", "empty", "--json").json()
    job = launched["jobs"][0]["job"]
    fleet.db.study_with_trials("no-model", [(job, 0.9)])
    result = run_cli("best", *fleet.study_args("no-model"))
    assert result.code == 1
    assert (
        f"Training job '{job}' wrote no model: s3://{fleet.bucket}/output/{job}/output/model.tar.gz does not exist"
        in result.err
    )
    deployed = run_cli("deploy", *fleet.study_args("no-model"))
    assert deployed.code == 1 and "wrote no model" in deployed.err


# What else a model.json needs to be read (core/artifact.py); the cases vary the rest.
VALID_MODEL_JSON = {
    "format_version": 1,
    "weights_file": "trial-0.npz",
    "params": {},
    "n_features": 64,
    "n_classes": 10,
}


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for member, body in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


@pytest.mark.process
@pytest.mark.parametrize(
    "meta, archive, message",
    [
        ({"study_name": "other", "trial_number": 0, "value": 0.9}, None, "holds a model of study 'other'"),
        (
            {"trial_number": 3, "value": 0.1},
            None,
            "holds trial 3 (value 0.1), not the study's best trial 0 (value 0.9)",
        ),
        (None, _tar_gz({"trial-0.npz": b"weights"}), "wrote no model: s3://"),
        (None, b"not a tar", "is not a readable model.tar.gz"),
    ],
)
def test_archive_that_does_not_hold_the_best_model(fleet, meta, archive, message):
    job = run_cli(*launch_args(fleet.bucket, fleet.secret), "--job-prefix", "odd", "--json").json()["jobs"][
        0
    ]["job"]
    name = f"mismatch-{uuid.uuid4().hex[:6]}"
    fleet.db.study_with_trials(name, [(job, 0.9)])
    if meta is not None:
        archive = _tar_gz(
            {"./model.json": json.dumps({**VALID_MODEL_JSON, "study_name": name, **meta}).encode()}
        )
    key = f"output/{job}/output/model.tar.gz"
    boto3.client("s3", region_name=services.REGION).put_object(Bucket=fleet.bucket, Key=key, Body=archive)
    result = run_cli("best", *fleet.study_args(name))
    assert result.code == 1 and message in result.err, result.err
    assert run_cli("best", *fleet.study_args(name), "--no-verify").code == 0


@pytest.mark.process
def test_best_trial_of_an_unknown_job_or_no_job(fleet):
    fleet.db.study_with_trials("ghost", [("ghost-job", 0.9)])
    result = run_cli("best", *fleet.study_args("ghost"))
    assert result.code == 1
    assert "Best trial 0 was run by job 'ghost-job': No training job 'ghost-job' in this region" in result.err
    fleet.db.study_with_trials("by-hand", [(None, 0.9)])
    result = run_cli("best", *fleet.study_args("by-hand"))
    assert result.code == 1 and "names no training job" in result.err


@pytest.mark.process
def test_study_without_completed_trials(fleet):
    fleet.db.study_with_trials("all-failed", [("x", None), ("x", None)])
    result = run_cli("best", *fleet.study_args("all-failed"))
    assert result.code == 1 and "has no completed trial yet" in result.err
    result = run_cli("status", *fleet.study_args("all-failed"), "--json")
    assert result.code == 0 and result.json()["states"]["FAIL"] == 2 and result.json()["best"] is None


# --- deploy ------------------------------------------------------------------------------------


@pytest.mark.process
def test_deploy_serves_the_best_model_with_our_image(fleet):
    best = run_cli("best", *fleet.study_args(), "--json").json()
    result = run_cli(
        "deploy", *fleet.study_args(), "--endpoint-name", "digits-best", "--wait", "--poll", "0.1", "--json"
    )
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["endpoint_name"] == "digits-best" and doc["status"] == "InService"
    sagemaker = boto3.client("sagemaker", region_name=services.REGION)
    model = sagemaker.describe_model(ModelName=doc["model_name"])
    assert model["PrimaryContainer"]["Image"] == IMAGE  # the image that trained it, whose `serve` loads it
    assert model["PrimaryContainer"]["ModelDataUrl"] == best["model_data_url"]
    assert model["ExecutionRoleArn"] == ROLE
    config = sagemaker.describe_endpoint_config(EndpointConfigName=doc["endpoint_config_name"])
    variant = config["ProductionVariants"][0]
    assert (variant["ModelName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
        doc["model_name"],
        "ml.m5.large",
        1,
    )
    endpoint = sagemaker.describe_endpoint(EndpointName="digits-best")
    assert endpoint["EndpointConfigName"] == doc["endpoint_config_name"]
    assert names.VALID.match(doc["model_name"]) and f"-t{best['trial']}-" in doc["model_name"]

    again = run_cli("deploy", *fleet.study_args(), "--endpoint-name", "digits-best")
    assert again.code == 1 and "Endpoint 'digits-best' already exists" in again.err


@pytest.mark.process
def test_the_launcher_does_not_need_the_training_toolkit():
    """Its user errors come from core.errors, not from sagemaker-training's ClientError."""
    code = "import sys, launcher.cli; print('sagemaker_training' in sys.modules)"
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "False", result.stderr
