"""launcher/jobresults.py's rules on made-up DescribeTrainingJob answers: which jobs are the
study's, its direction, which model wins, and when to refuse. A stand-in SageMaker client
answers ListTrainingJobs (with SageMaker's paging and sort order) and DescribeTrainingJob from a
list; tests/process/test_launcher_jobresults.py runs the same code on real jobs in moto."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from core.errors import UserError
from launcher import jobresults

pytestmark = pytest.mark.unit

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
LOSS = {"study-name": "s", "objective-metric": "loss"}


def job(
    name: str,
    final: dict[str, float],
    hps: dict[str, str] | None = None,
    status: str = "Completed",
    created: dt.datetime = T0,
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "TrainingJobName": name,
        "TrainingJobStatus": status,
        "HyperParameters": LOSS if hps is None else hps,
        "CreationTime": created,
        "FinalMetricDataList": [{"MetricName": k, "Value": v} for k, v in final.items()],
        "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
    }
    if status in ("Completed", "Stopped"):
        d["ModelArtifacts"] = {"S3ModelArtifacts": f"s3://b/o/{name}/output/model.tar.gz"}
    if status == "Failed":
        d["FailureReason"] = "lost the database"
    return d


def model(trial: int, value: float, **more: float) -> dict[str, float]:
    return {
        "model:trial": trial,
        "model:value": value,
        **{k.replace("_", ":", 1): v for k, v in more.items()},
    }


class SageMaker:
    """ListTrainingJobs and DescribeTrainingJob over ``jobs``, as SageMaker pages and sorts them."""

    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        self.jobs = jobs
        self.described: list[str] = []

    def list_training_jobs(self, NameContains, SortBy, SortOrder, MaxResults, NextToken="0"):  # noqa: N803
        assert SortBy == "CreationTime" and MaxResults <= 100
        hits = sorted(
            (j for j in self.jobs if NameContains in j["TrainingJobName"]),
            key=lambda j: j["CreationTime"],
            reverse=SortOrder == "Descending",
        )
        i = int(NextToken)
        page: dict[str, Any] = {
            "TrainingJobSummaries": [
                {"TrainingJobName": j["TrainingJobName"]} for j in hits[i : i + MaxResults]
            ]
        }
        if i + MaxResults < len(hits):
            page["NextToken"] = str(i + MaxResults)
        return page

    def describe_training_job(self, TrainingJobName):  # noqa: N803
        self.described.append(TrainingJobName)
        return next(j for j in self.jobs if j["TrainingJobName"] == TrainingJobName)


def best(jobs: list[dict[str, Any]], **kwargs: Any):
    return jobresults.find_best(SageMaker(jobs), None, None, "s", **kwargs)


# --- 1. the study's direction ------------------------------------------------------------------


def test_a_loss_study_picks_the_lowest_loss_even_if_its_oldest_job_failed_on_a_bad_hyperparameter():
    found, _ = best(
        [
            job("s-a-0", {}, {**LOSS, "heartbeat-interval": "600"}, status="Failed", created=T0),
            job("s-b-0", model(1, 0.10), created=T0 + dt.timedelta(days=1)),
            job("s-b-1", model(2, 0.90), created=T0 + dt.timedelta(days=1)),
        ]
    )
    assert (found.direction, found.trial_number, found.job.name) == ("minimize", 1, "s-b-0")


def test_direction_follows_objective_metric_and_sdk_encoded_values():
    sdk = {"study-name": '"s"', "objective-metric": '"loss"'}
    found, _ = best([job("s-0", model(1, 0.3), sdk), job("s-1", model(2, 0.2), sdk)])
    assert (found.direction, found.trial_number) == ("minimize", 2)
    accuracy = {"study-name": "s"}  # objective-metric's default: accuracy, maximised
    found, _ = best([job("s-0", model(1, 0.3), accuracy), job("s-1", model(2, 0.2), accuracy)])
    assert (found.direction, found.trial_number) == ("maximize", 1)


def test_jobs_that_disagree_on_the_direction_are_refused():
    with pytest.raises(UserError, match=r"disagree on its direction.*maximize: s-1; minimize: s-0"):
        best([job("s-0", model(1, 0.3)), job("s-1", model(2, 0.2), {"study-name": "s"})])


def test_a_job_without_a_model_does_not_decide_the_direction():
    found, _ = best([job("s-0", model(1, 0.3)), job("s-1", {}, {"study-name": "s"}, status="Failed")])
    assert found.direction == "minimize"


# --- 2. listing: newest first, other studies' names not described, caps said ------------------


def test_more_jobs_than_the_cap_read_the_newest_and_say_so():
    old = [job(f"s-old-{i}", model(i, 0.5), created=T0 + dt.timedelta(seconds=i)) for i in range(1000)]
    new = [job(f"s-new-{i}", model(2000 + i, 0.01), created=T0 + dt.timedelta(days=2)) for i in range(5)]
    sagemaker = SageMaker(old + new)
    found, notes = jobresults.find_best(sagemaker, None, None, "s")
    assert (found.trial_number, found.value) == (2000, reported(0.01))
    assert len(sagemaker.described) == jobresults.MAX_JOBS
    assert any(
        n.startswith(f"Only the newest {jobresults.MAX_JOBS} of the study's jobs were read") for n in notes
    )


def test_jobs_on_several_pages_are_all_read_without_a_note():
    jobs = [job(f"s-{i}", model(i, 0.5 - i / 1000), created=T0 + dt.timedelta(seconds=i)) for i in range(250)]
    doc = jobresults.status(SageMaker(jobs), None, None, "s")
    assert [row["job"] for row in doc["jobs"]] == [f"s-{i}" for i in range(250)]  # oldest first
    assert doc["best"]["trial"] == 249 and doc["notes"] == []


def test_other_studies_jobs_whose_names_contain_the_study_name_are_not_described():
    other = {"study-name": "mnist-s", "objective-metric": "loss"}
    sagemaker = SageMaker([job("mnist-s-0", model(0, 0.0), other), job("s-0", model(3, 0.4))])
    found, _ = jobresults.find_best(sagemaker, None, None, "s")
    assert found.trial_number == 3 and sagemaker.described == ["s-0"]
    # --job-prefix keeps its meaning, "names that contain it"; study-name still decides.
    sagemaker = SageMaker([job("mnist-s-0", model(0, 0.0), other), job("x-s-0", model(3, 0.4))])
    found, _ = jobresults.find_best(sagemaker, None, None, "s", "s")
    assert found.job.name == "x-s-0" and sorted(sagemaker.described) == ["mnist-s-0", "x-s-0"]


# --- 3. a job that ended without a model ------------------------------------------------------


def test_a_failed_job_whose_model_beats_the_chosen_one_is_refused_as_the_database_source_does():
    jobs = [
        job("s-0", model(1, 0.05, job_trials=3, best_trial=1, best_value=0.05), status="Failed"),
        job("s-1", model(2, 0.30)),
    ]
    with pytest.raises(UserError) as refused:
        best(jobs)
    assert str(refused.value) == (
        "The study's best so far (value 0.05, trial 1) is kept by training job 's-0', which wrote no "
        "model (its status is Failed: lost the database) (best among jobs with a model: value 0.3, job 's-1')"
    )


def test_a_failed_job_with_a_worse_model_is_passed_over_with_a_correct_note():
    jobs = [
        job("s-0", model(1, 0.50), status="Failed"),
        job("s-1", {}, status="Failed"),
        job("s-2", model(2, 0.30)),
    ]
    found, notes = best(jobs)
    assert found.job.name == "s-2"
    assert notes == ["Not counted, ended without reporting a model: s-1 (Failed)"]


def test_a_stopped_job_without_artifacts_counts_as_a_job_without_a_model():
    stopped = job("s-0", model(1, 0.05), status="Stopped")
    del stopped["ModelArtifacts"]
    with pytest.raises(UserError, match=r"'s-0', which wrote no model \(its status is Stopped\)"):
        best([stopped, job("s-1", model(2, 0.30))])


# --- 6. every source rounded as SageMaker reports metrics (float32) ---------------------------


class CloudWatch:
    """GetMetricData answering each metric's latest value from ``values`` (per job)."""

    def __init__(self, values: dict[str, dict[str, float]]) -> None:
        self.values = values
        self.calls: list[dict[str, Any]] = []

    def get_metric_data(self, MetricDataQueries, StartTime, EndTime, ScanBy):  # noqa: N803
        self.calls.append({"queries": MetricDataQueries, "start": StartTime, "end": EndTime})
        results = []
        for q in MetricDataQueries:
            metric = q["MetricStat"]["Metric"]
            value = self.values[metric["Dimensions"][0]["Value"]].get(metric["MetricName"])
            timestamps, values = ([EndTime], [value]) if value is not None else ([], [])
            results.append({"Id": q["Id"], "Timestamps": timestamps, "Values": values})
        return {"MetricDataResults": results}


def reported(value: float) -> float:
    """What DescribeTrainingJob answers for a metric line's value: a 32-bit float."""
    return float(np.float32(value))


def test_a_running_job_reporting_the_same_model_value_in_cloudwatch_is_a_tie_not_better():
    ended = job("s-0", model(1, reported(0.1)))
    running = job("s-1", {}, status="InProgress")
    cloudwatch = CloudWatch({"s-1": {"job:trials": 2, "model:trial": 4, "model:value": 0.1}})
    found, _ = jobresults.find_best(SageMaker([ended, running]), None, cloudwatch, "s")
    assert (found.job.name, found.value) == ("s-0", reported(0.1))


def test_a_model_json_value_ties_a_final_metric_and_the_lower_trial_wins(monkeypatch):
    records = {
        "s-0": SimpleNamespace(study_name="s", trial_number=3, value=0.9593, params={"units": 64}),
        "s-1": SimpleNamespace(study_name="s", trial_number=5, value=0.9593, params={"units": 32}),
    }
    monkeypatch.setattr(jobresults.artifacts, "read_model_record", lambda s3, uri, name: records[name])
    from_model_json = job("s-0", {})  # e.g. an SDK job without the metric definitions
    from_final = job("s-1", model(5, reported(0.9593)))
    found, _ = jobresults.find_best(SageMaker([from_model_json, from_final]), object(), None, "s")
    assert (found.trial_number, found.job.name, found.params) == (3, "s-0", {"units": 64})


# --- 7. GetMetricData's period for a job that started long ago --------------------------------


@pytest.mark.parametrize(
    ("started_days_ago", "step"),
    [(0.1, 60), (14, 60), (15.5, 300), (20, 300), (62, 300), (64, 3600), (200, 3600)],
)
def test_the_period_is_a_multiple_of_what_cloudwatch_requires_for_the_start_time(started_days_ago, step):
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    cloudwatch = CloudWatch({"s-0": {"model:trial": 1, "model:value": 0.5}})
    found = jobresults.live_metrics(
        cloudwatch, "s-0", "minimize", now - dt.timedelta(days=started_days_ago), now=now
    )
    assert found == {"model:trial": 1, "model:value": 0.5}
    call = cloudwatch.calls[-1]
    periods = {q["MetricStat"]["Period"] for q in call["queries"]}
    assert len(periods) == 1
    period = periods.pop()
    assert period % step == 0 and period >= 60
    assert (call["end"] - call["start"]).total_seconds() / period <= jobresults.MAX_POINTS


# --- 4. the jobs' database, compared with the one the command was given -----------------------

ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod-db-AbC123"


def test_jobs_of_the_same_study_name_on_another_database_are_left_out_when_one_is_given():
    jobs = [
        job("s-0", model(1, 0.01), {**LOSS, "db-secret": "dev-db"}),
        job("s-1", model(2, 0.30), {**LOSS, "db-secret": ARN}),
        job("s-2", model(3, 0.20), {**LOSS, "db-secret": '"prod-db"'}),  # SDK v2's JSON encoding
    ]
    found, notes = best(jobs, database={"db-secret": "prod-db"})
    assert (found.job.name, found.trial_number) == ("s-2", 3)
    assert notes == [
        "Left out, jobs of study 's' on another database (their db-secret is not the one given): s-0"
    ]
    found, _ = best(jobs, database={"db-secret": ARN})
    assert found.job.name == "s-2"


def test_storage_and_host_are_compared_and_a_storage_url_is_not_shown():
    url = "mysql+pymysql://optuna@db.internal/optuna"
    jobs = [
        job("s-0", model(1, 0.01), {**LOSS, "storage": "sqlite:///other.db"}),
        job("s-1", model(2, 0.30), {**LOSS, "storage": url}),
        job("s-2", model(3, 0.20), {**LOSS, "db-secret": "prod-db", "host": "10.0.0.9"}),
        job("s-3", model(4, 0.25), {**LOSS, "db-secret": "prod-db"}),  # the secret's own host
    ]
    for i, d in enumerate(jobs):
        d["CreationTime"] = T0 + dt.timedelta(seconds=i)
    found, _ = best(jobs, database={"storage": url})
    assert found.job.name == "s-1"
    found, notes = best(jobs, database={"db-secret": "prod-db", "host": "127.0.0.1"})
    assert found.job.name == "s-3"
    assert "(their db-secret is not the one given): s-0, s-1" in notes[0]
    assert "(their host is not the one given): s-2" in notes[1]


def test_without_a_database_given_jobs_on_several_databases_are_shown_for_each_candidate():
    url = "mysql+pymysql://optuna@db.internal/optuna"
    jobs = [
        job("s-0", model(1, 0.01), {**LOSS, "db-secret": "dev-db"}),
        job("s-1", model(2, 0.30), {**LOSS, "storage": url}, created=T0 + dt.timedelta(seconds=1)),
    ]
    doc = jobresults.status(SageMaker(jobs), None, None, "s")
    assert [row["database"] for row in doc["jobs"]] == ["db-secret dev-db", "storage URL"]
    assert doc["notes"] == [
        "The jobs found name more than one database (db-secret dev-db: s-0; storage URL: s-1); "
        "--db-secret or --storage keeps only the jobs on that database"
    ]
    assert "database" in jobresults.status_text(doc) and url not in jobresults.status_text(doc)
