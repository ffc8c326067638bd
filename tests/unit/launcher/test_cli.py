"""`sagemaker-optuna` in process, before any AWS call: dry runs, usage mistakes, jobs of several
hosts, reports without the plots extra."""

from __future__ import annotations

import json
import sys

import optuna
import pytest

from launcher import cli, names
from launcher.constants import METRIC_DEFINITIONS
from tests.support.cli import STUDY, launch_args, run_cli


@pytest.mark.unit
def test_missing_channel_is_named():
    args = launch_args("bucket", "s")
    at = args.index("test=s3://bucket/data/test")
    result = run_cli(*args[: at - 1], *args[at + 1 :], "--dry-run")
    assert result.code == 1 and "Missing channel test" in result.err


@pytest.mark.unit
def test_dry_run_prints_requests_without_aws(monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    hps = tmp_path / "hps.json"
    hps.write_text(json.dumps({"n-trials": 5, "sampler": "random"}))
    result = run_cli(
        *launch_args("bucket", "s"),
        "--jobs",
        "12",
        "--job-prefix",
        "x" * 80,
        "--hyperparameters",
        str(hps),
        "--dry-run",
    )
    assert result.code == 0, result.err
    requests = result.json()
    job_names = [r["TrainingJobName"] for r in requests]
    assert len(set(job_names)) == 12 and all(len(n) == 63 and names.VALID.match(n) for n in job_names)
    assert job_names[0].endswith("-00") and job_names[11].endswith("-11")
    assert requests[0]["AlgorithmSpecification"]["MetricDefinitions"] == list(METRIC_DEFINITIONS)
    assert requests[0]["HyperParameters"] == {
        "study-name": STUDY,
        "db-secret": "s",
        "n-trials": "5",
        "sampler": "random",
    }


@pytest.mark.unit
def test_instances_make_jobs_of_several_hosts_on_one_study():
    """--instances N: InstanceCount N in every job; the embedded study needs no database then."""
    args = launch_args("bucket", "s")
    at = args.index("--db-secret")
    result = run_cli(*args, "--jobs", "2", "--instances", "4", "--dry-run")
    assert result.code == 0, result.err
    assert [r["ResourceConfig"]["InstanceCount"] for r in result.json()] == [4, 4]
    alone = args[:at] + args[at + 2 :]  # no database: each job's own embedded study
    result = run_cli(*alone, "--instances", "3", "--dry-run")
    assert result.code == 0, result.err
    (request,) = result.json()
    assert request["ResourceConfig"]["InstanceCount"] == 3 and "db-secret" not in request["HyperParameters"]
    assert run_cli(*args, "--instances", "101", "--dry-run").code == 1


@pytest.mark.unit
def test_no_database_option_is_a_clear_error():
    result = run_cli("status", "--study", "s", "--source", "study")
    assert result.code == 1 and "Which database?" in result.err


# --- what moto cannot show: a failed or running job (DescribeTrainingJob answers as data) -------


@pytest.mark.unit
def test_failed_and_running_jobs_are_reported_and_fail_the_launch():
    from core.errors import UserError
    from launcher import jobs, output

    failed = jobs.JobState.from_description(
        {
            "TrainingJobName": "digits-1",
            "TrainingJobStatus": "Failed",
            "SecondaryStatus": "Failed",
            "FailureReason": "ClientError: Invalid hyperparameters: unknown hyperparameter 'n-trails'",
            "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
        }
    )
    running = jobs.JobState.from_description(
        {"TrainingJobName": "digits-2", "TrainingJobStatus": "InProgress"}
    )
    stopped = jobs.JobState.from_description(
        {
            "TrainingJobName": "digits-3",
            "TrainingJobStatus": "Stopped",
            "ModelArtifacts": {"S3ModelArtifacts": "s3://b/o/digits-3/output/model.tar.gz"},
        }
    )
    assert jobs.all_completed([stopped]) and not jobs.all_completed([stopped, failed])
    assert not jobs.all_completed([running]) and not running.ended
    lines = output.table([s.row() for s in (failed, running, stopped)], cli.JOB_COLUMNS).splitlines()
    assert lines[1].split(None, 3) == ["digits-1", "Failed", "Failed", failed.failure_reason]
    assert lines[2].split() == ["digits-2", "InProgress", "-", "-"]
    with pytest.raises(UserError, match=r"'digits-1' wrote no model \(its status is Failed: ClientError"):
        jobs.check_wrote_model(failed)
    with pytest.raises(UserError, match="InProgress; a job uploads its model when it ends"):
        jobs.check_wrote_model(running)
    assert jobs.check_wrote_model(stopped).endswith("digits-3/output/model.tar.gz")


@pytest.mark.unit
@pytest.mark.parametrize("missing", ["matplotlib", "plotly"])
def test_report_without_the_plots_extra_keeps_its_summary_and_says_what_to_install(
    font_cache, monkeypatch, tmp_path, caplog, missing
):
    """The image has no matplotlib or plotly (the `plots` extra): `report` still writes its files."""
    from launcher import plots, report

    study = optuna.create_study(direction="maximize")
    for value in (0.5, 0.9):
        study.add_trial(
            optuna.trial.create_trial(
                value=value,
                params={"x": value},
                distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
            )
        )
    monkeypatch.setitem(sys.modules, missing, None)  # import raises ImportError
    written = report.write(study, tmp_path)
    assert [p.name for p in written] == ["trials.csv", "best_trial.json"]
    assert all(p.exists() for p in written) and not (tmp_path / "plots").exists()
    assert f"Plots skipped: {missing} is not installed ({plots.INSTALL_HINT})" in caplog.text
