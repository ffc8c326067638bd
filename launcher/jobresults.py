"""``status``, ``best`` and ``deploy`` without the database: what the study's training jobs leave
in SageMaker and S3, read with AWS credentials only.

Every job prints, after each trial it finishes, how many it has finished and the model it keeps
(``job_trials=4 model_trial=7 model_value=0.9593``), and at its end the study's best as it sees
it (``best_trial=... best_value=...``): hpo_study/report.py. The launcher's MetricDefinitions
make SageMaker turn those lines into metrics, which are read here:

- a job that ended: DescribeTrainingJob's ``FinalMetricDataList``, "a list of final metric values
  that are set when the training job completes" (SageMaker API reference, TrainingJob and
  DescribeTrainingJob): each metric's last value;
- a job that runs: the same metrics as CloudWatch time series in the namespace
  ``/aws/sagemaker/TrainingJobs`` with the dimension ``TrainingJobName``, where SageMaker
  publishes them while the job runs (the SDK's TrainingJobAnalytics reads them the same way);
- a job launched without those definitions (an SDK Estimator without ``metric_definitions``):
  the ``model.json`` in its ``model.tar.gz`` on S3, which names the trial and value it holds.

Why this gives the study's best model: each job keeps the best of the trials it ran
(core/ranking.py's rule), so the best of the jobs' kept models, of equal values the lowest trial
number, is the study's best trial, the very model ``best`` finds from the database, once every
job that ran trials has ended. The study database stays the source of truth: with ``--host``,
``--storage`` or a reachable database (launcher/source.py) the commands read it instead.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from core import ranking
from core.errors import UserError
from hpo_study import settings as settings_mod
from launcher import artifacts, aws, jobs, names, output
from launcher.best import BestModel
from launcher.constants import (
    CLOUDWATCH_JOB_DIMENSION,
    CLOUDWATCH_NAMESPACE,
    HP_STUDY_NAME,
    METRIC_BEST_TRIAL,
    METRIC_BEST_VALUE,
    METRIC_JOB_TRIALS,
    METRIC_MODEL_TRIAL,
    METRIC_MODEL_VALUE,
)

MAX_JOBS = 1000  # the study's jobs described at most (DescribeTrainingJob each), the newest
MAX_LIST_PAGES = 50  # ListTrainingJobs pages read at most (100 names per page)
# launch cuts the prefix in job names to leave room for "-<UTC time>-<index>" (launcher/names.py):
# 63 - len("-20240131-235959-999").
NAME_PREFIX_ROOM = 43
LIST_PAGE = 100
# CloudWatch answers at most 1440 points per metric; periods are multiples of 60 s.
MAX_POINTS, MIN_PERIOD_S = 1000, 60
FROM_FINAL, FROM_CLOUDWATCH, FROM_MODEL_JSON = "final metrics", "cloudwatch", "model.json"
SOURCE_NAME = "training jobs (SageMaker and S3)"
STATUS_COLUMNS = ("job", "status", "trials", "model_trial", "best", "from", "database", "failure_reason")
# The hyperparameters that say which database a job's study is in, compared with the command's
# options of the same names when given (a study name alone can be reused on another database).
DATABASE_HPS = ("db-secret", "storage", "host")


@dataclasses.dataclass(frozen=True)
class JobResult:
    """One job of the study and what it reported."""

    job: jobs.JobState
    direction: str | None  # None: its hyperparameters name no direction we know
    started: dt.datetime | None
    metrics: dict[str, float]
    metrics_from: str | None  # FROM_FINAL, FROM_CLOUDWATCH, FROM_MODEL_JSON or None (nothing yet)
    note: str | None = None  # why a source was not read (e.g. CloudWatch denied)
    database: str | None = None  # which database the job was given (database_text)

    def _int(self, name: str) -> int | None:
        value = self.metrics.get(name)
        return None if value is None or not math.isfinite(value) else int(value)

    @property
    def trials(self) -> int | None:
        return self._int(METRIC_JOB_TRIALS)

    @property
    def model_trial(self) -> int | None:
        return self._int(METRIC_MODEL_TRIAL)

    @property
    def model_value(self) -> float | None:
        return self.metrics.get(METRIC_MODEL_VALUE)

    def row(self) -> dict[str, Any]:
        return {
            "job": self.job.name,
            "status": self.job.status,
            "trials": self.trials,
            "model_trial": self.model_trial,
            "best": self.model_value,
            "from": self.metrics_from,
            "database": self.database,
            "failure_reason": self.job.failure_reason,
        }


# --- finding the study's jobs ------------------------------------------------------------------


def _direction(hps: dict[str, Any]) -> str | None:
    """The job's direction from ``objective-metric`` (its natural direction) and ``direction``
    alone: not the job's whole settings, so a job that failed on an unrelated hyperparameter
    still counts in its study's direction. None when neither names one."""
    metric = settings_mod.decode(hps.get("objective-metric", "")).strip().lower()
    natural = settings_mod.NATURAL_DIRECTION.get(metric or settings_mod.Settings.objective_metric)
    given = settings_mod.decode(hps.get("direction", "")).strip().lower()
    return natural or (given if given in ranking.DIRECTIONS else None)


def study_direction(study_name: str, found: list[JobResult]) -> str:
    """The study's direction, from the jobs that reported a model (from every job while none
    has); jobs that disagree are refused rather than one picked."""
    reporting = [r for r in found if r.model_value is not None] or found
    directions = sorted({r.direction for r in reporting if r.direction})
    if len(directions) > 1:
        split = "; ".join(
            f"{d}: {', '.join(r.job.name for r in reporting if r.direction == d)}" for d in directions
        )
        raise UserError(
            f"The jobs of study '{study_name}' disagree on its direction (from their objective-metric "
            f"and direction hyperparameters): {split}"
        )
    return directions[0] if directions else ranking.MAXIMIZE


def _secret_name(secret: str) -> str:
    """A Secrets Manager id as a name: an ARN ends in ``secret:<name>-<6 random characters>``."""
    if secret.startswith("arn:") and ":secret:" in secret:
        return secret.rsplit(":secret:", 1)[1][:-7]
    return secret


def _job_database(hps: dict[str, Any]) -> dict[str, str]:
    values = {key: settings_mod.decode(hps.get(key, "")).strip() for key in DATABASE_HPS}
    return {key: value for key, value in values.items() if value}


def database_text(database: dict[str, str]) -> str | None:
    """Which database, for people: the secret's id and the host; a storage URL is not shown
    (it may hold a user name and host one would rather not print), only that there is one."""
    parts = [f"{key} {value}" for key, value in database.items() if key != "storage"]
    if "storage" in database:
        parts.append("storage URL")
    return ", ".join(parts) or None


def _other_database(job: dict[str, str], given: dict[str, str]) -> list[str]:
    """The options given to the command that name another database than the job's own. A job
    without ``host`` used its secret's host: only a host both sides name is compared."""
    differ = []
    for key, value in given.items():
        theirs = job.get(key)
        if key == "host" and theirs is None:
            continue
        if key == "db-secret":
            same = theirs is not None and (theirs == value or _secret_name(theirs) == _secret_name(value))
        else:
            same = theirs == value
        if not same:
            differ.append(key)
    return differ


def _contains(study_name: str, prefix: str | None) -> str:
    return names.shorten(prefix or study_name, NAME_PREFIX_ROOM)


def _may_be_the_studys(name: str, contains: str, prefix: str | None) -> bool:
    """Without --job-prefix, jobs are named as ``launch`` (and the SDK, from a base job name)
    name them, ``<study>-<suffix>``: a name that merely contains the study name (study ``s``,
    job ``mnist-s-...``) is another study's and is not described."""
    return prefix is not None or name == contains or name.startswith(contains + "-")


def study_jobs(
    sagemaker: Any, study_name: str, prefix: str | None, database: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """DescribeTrainingJob of the newest ``MAX_JOBS`` jobs whose name holds ``prefix`` (default:
    the study name as ``launch`` puts it in job names) and whose ``study-name`` hyperparameter is
    the study, oldest first; and notes: when a cap left older jobs unread, when jobs of the
    study name were on another database than ``database`` (the command's db-secret, storage,
    host, when given) and so left out."""
    given = {key: value for key, value in (database or {}).items() if value}
    elsewhere: dict[str, list[str]] = {}
    contains = _contains(study_name, prefix)
    found: list[dict[str, Any]] = []
    token: dict[str, str] = {}
    capped = None
    # Newest first: when a cap is hit, what is left unread is the oldest jobs, not the newest.
    for pages in range(1, MAX_LIST_PAGES + 1):
        page = aws.call(
            sagemaker,
            "list_training_jobs",
            NameContains=contains,
            SortBy="CreationTime",
            SortOrder="Descending",
            MaxResults=LIST_PAGE,
            **token,
        )
        for summary in page.get("TrainingJobSummaries", []):
            name = summary["TrainingJobName"]
            if not _may_be_the_studys(name, contains, prefix):
                continue
            if len(found) == MAX_JOBS:
                capped = f"the newest {MAX_JOBS} of the study's jobs"
                break
            d = aws.call(sagemaker, "describe_training_job", TrainingJobName=name)
            hps = d.get("HyperParameters") or {}
            if settings_mod.decode(hps.get(HP_STUDY_NAME, "")).strip() != study_name:
                continue
            differ = _other_database(_job_database(hps), given)
            if differ:
                elsewhere.setdefault(", ".join(differ), []).append(name)
            else:
                found.append(d)
        if capped or not page.get("NextToken"):
            break
        if pages == MAX_LIST_PAGES:
            capped = f"the newest {MAX_LIST_PAGES * LIST_PAGE} jobs whose name contains '{contains}'"
        token = {"NextToken": page["NextToken"]}
    notes = []
    if capped:
        notes.append(f"Only {capped} were read; older jobs were not (a narrower --job-prefix reads them all)")
    for keys, skipped in sorted(elsewhere.items()):
        notes.append(
            f"Left out, jobs of study '{study_name}' on another database (their {keys} is not the "
            f"one given): {', '.join(reversed(skipped))}"
        )
    found.reverse()
    return found, notes


# --- what each job reported --------------------------------------------------------------------


def as_reported(value: float) -> float:
    """``value`` as SageMaker reports a metric: FinalMetricDataList's values are 32-bit floats
    (botocore's shape MetricData.Value is a Float; the API reference: "Value -- Type: Float").
    Every source (final metrics, CloudWatch's doubles, model.json's doubles) is rounded alike
    before values are compared, so a tie between one job's final metric and another's model.json
    or CloudWatch value stays a tie (the lower trial wins) instead of turning on rounding."""
    return float(np.float32(value))


def _final_metrics(d: dict[str, Any]) -> dict[str, float]:
    return {m["MetricName"]: as_reported(m["Value"]) for m in d.get("FinalMetricDataList") or []}


def _period(start: dt.datetime, end: dt.datetime, now: dt.datetime) -> int:
    """A period giving at most MAX_POINTS points from ``start`` to ``end``, in the step CloudWatch
    requires for a start that old, or it returns no data points: a multiple of 60 s up to 15
    days back, of 300 s from 15 to 63 days, of 3600 s beyond (CloudWatch API reference,
    MetricStat, Period; the same tiers as its retention of 1-minute, 5-minute and 1-hour data)."""
    age = now - start
    step = MIN_PERIOD_S if age <= dt.timedelta(days=15) else 300 if age <= dt.timedelta(days=63) else 3600
    span = max((end - start).total_seconds(), 1.0)
    return max(step, math.ceil(span / MAX_POINTS / step) * step)


def live_metrics(
    cloudwatch: Any, job_name: str, direction: str | None, start: dt.datetime, now: dt.datetime | None = None
) -> dict[str, float]:
    """The latest value of the job's progress metrics from CloudWatch (one GetMetricData call).

    Each metric only grows (trials, the kept trial's number) or only improves (the kept
    model's value), so the latest period's maximum (minimum for a minimised value) is its
    latest value, whatever the period."""
    now = now or dt.datetime.now(dt.UTC)
    end = now + dt.timedelta(minutes=1)
    period = _period(start, end, now)
    improving = "Minimum" if direction == ranking.MINIMIZE else "Maximum"
    stats = {METRIC_JOB_TRIALS: "Maximum", METRIC_MODEL_TRIAL: "Maximum", METRIC_MODEL_VALUE: improving}
    ids = {f"m{i}": name for i, name in enumerate(stats)}
    answer = aws.call(
        cloudwatch,
        "get_metric_data",
        MetricDataQueries=[
            {
                "Id": qid,
                "MetricStat": {
                    "Metric": {
                        "Namespace": CLOUDWATCH_NAMESPACE,
                        "MetricName": name,
                        "Dimensions": [{"Name": CLOUDWATCH_JOB_DIMENSION, "Value": job_name}],
                    },
                    "Period": period,
                    "Stat": stats[name],
                },
            }
            for qid, name in ids.items()
        ],
        StartTime=start,
        EndTime=end,
        ScanBy="TimestampDescending",
    )
    found: dict[str, float] = {}
    for result in answer.get("MetricDataResults", []):
        pairs = sorted(zip(result.get("Timestamps", []), result.get("Values", []), strict=False))
        if pairs and result["Id"] in ids:
            found[ids[result["Id"]]] = as_reported(pairs[-1][1])
    return found


def _from_model_json(s3: Any, state: jobs.JobState) -> dict[str, float]:
    record = artifacts.read_model_record(s3, jobs.check_wrote_model(state), state.name)
    if record.trial_number is None or record.value is None:
        return {}
    return {METRIC_MODEL_TRIAL: float(record.trial_number), METRIC_MODEL_VALUE: as_reported(record.value)}


def results(
    sagemaker: Any,
    s3: Any | None,
    cloudwatch: Any | None,
    study_name: str,
    prefix: str | None = None,
    database: dict[str, str] | None = None,
) -> tuple[list[JobResult], list[str]]:
    """Every job of the study with what it reported (see the module's docstring for the order),
    and notes on what was not read."""
    found: list[JobResult] = []
    described, notes = study_jobs(sagemaker, study_name, prefix, database)
    for d in described:
        state = jobs.JobState.from_description(d)
        direction = _direction(d.get("HyperParameters") or {})
        started = d.get("TrainingStartTime") or d.get("CreationTime")
        metrics, source, note = {}, None, None
        if state.ended:
            metrics = _final_metrics(d)
            source = FROM_FINAL if METRIC_MODEL_VALUE in metrics else None
            if source is None and state.has_model and s3 is not None:
                try:
                    metrics.update(_from_model_json(s3, state))
                except UserError as exc:  # one unreadable archive does not hide the other jobs
                    note = str(exc)
                source = FROM_MODEL_JSON if METRIC_MODEL_VALUE in metrics else None
        elif cloudwatch is not None and started is not None:
            try:
                metrics = live_metrics(cloudwatch, state.name, direction, started)
            except aws.AwsError as exc:
                note = f"CloudWatch metrics not read: {exc}"
            source = FROM_CLOUDWATCH if metrics else None
        where = database_text(_job_database(d.get("HyperParameters") or {}))
        found.append(JobResult(state, direction, started, metrics, source, note, where))
    return found, notes


def _databases_note(found: list[JobResult]) -> list[str]:
    """A note when the jobs taken as the study's name more than one database."""
    by_database: dict[str, list[str]] = {}
    for r in found:
        by_database.setdefault(r.database or "none named", []).append(r.job.name)
    if len(by_database) < 2:
        return []
    listed = "; ".join(f"{db}: {', '.join(names)}" for db, names in sorted(by_database.items()))
    return [
        f"The jobs found name more than one database ({listed}); --db-secret or --storage "
        "keeps only the jobs on that database"
    ]


def _no_jobs(study_name: str, prefix: str | None) -> UserError:
    return UserError(
        f"No training job of study '{study_name}' found (jobs whose name contains "
        f"'{_contains(study_name, prefix)}' and whose study-name is '{study_name}'; "
        "see --job-prefix and --region)"
    )


def _winner(direction: str, candidates: Iterable[JobResult]) -> JobResult | None:
    ordered = sorted(candidates, key=lambda r: (r.model_trial is None, r.model_trial or 0))
    return ranking.best(direction, ordered, lambda r: r.model_value)


def _reported_study_best(direction: str, found: list[JobResult]) -> dict[str, Any] | None:
    """The study's best as the ended jobs saw it at their ends (best:trial, best:value)."""
    reports = [r for r in found if r.metrics.get(METRIC_BEST_VALUE) is not None]
    ordered = sorted(reports, key=lambda r: r.metrics.get(METRIC_BEST_TRIAL, math.inf))
    top = ranking.best(direction, ordered, lambda r: r.metrics[METRIC_BEST_VALUE])
    if top is None:
        return None
    trial = top.metrics.get(METRIC_BEST_TRIAL)
    return {
        "trial": None if trial is None else int(trial),
        "value": top.metrics[METRIC_BEST_VALUE],
        "reported_by": top.job.name,
    }


# --- status ------------------------------------------------------------------------------------


def status(
    sagemaker: Any,
    s3: Any | None,
    cloudwatch: Any | None,
    study_name: str,
    prefix: str | None = None,
    database: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The study's progress from its jobs: per job its status, trials finished and kept model."""
    found, listing_notes = results(sagemaker, s3, cloudwatch, study_name, prefix, database)
    if not database:  # given, it kept only the jobs on it
        listing_notes += _databases_note(found)
    if not found:
        raise _no_jobs(study_name, prefix)
    direction = study_direction(study_name, found)
    best = _winner(direction, found)
    counts: dict[str, int] = {}
    for r in found:
        counts[r.job.status] = counts.get(r.job.status, 0) + 1
    known = [r.trials for r in found if r.trials is not None]
    return {
        "source": SOURCE_NAME,
        "study": study_name,
        "direction": direction,
        "job_states": counts,
        "trials": sum(known) if known else None,
        "best": None
        if best is None
        else {"trial": best.model_trial, "value": best.model_value, "job": best.job.name},
        "study_best_reported": _reported_study_best(direction, found),
        "jobs": [r.row() for r in found],
        "notes": listing_notes + sorted({r.note for r in found if r.note}),
    }


# --- best --------------------------------------------------------------------------------------


def find_best(
    sagemaker: Any,
    s3: Any | None,
    cloudwatch: Any | None,
    study_name: str,
    prefix: str | None = None,
    database: dict[str, str] | None = None,
) -> tuple[BestModel, list[str]]:
    """The study's best model among its ended jobs' models, checked against its model.json
    (with ``s3``), and notes on what might be better but is not available yet."""
    found, listing_notes = results(sagemaker, s3, cloudwatch, study_name, prefix, database)
    if not database:  # given, it kept only the jobs on it
        listing_notes += _databases_note(found)
    if not found:
        raise _no_jobs(study_name, prefix)
    direction = study_direction(study_name, found)
    ended = [r for r in found if r.job.has_model]
    chosen = _winner(direction, ended)
    if chosen is None:
        states = ", ".join(f"{r.job.name} {r.job.status}" for r in found)
        unread = [r.job.name for r in ended if r.metrics_from is None]
        why = f" (no metrics or model.json read for {', '.join(unread)})" if unread else ""
        raise UserError(f"No job of study '{study_name}' has ended with a model yet{why}: {states}")
    # A job without a model (running, or ended Failed/Stopped without one) whose reported model
    # is better: the study's best model is not available, as the database source says too.
    pending = _winner(direction, [r for r in found if not r.job.has_model])
    if pending is not None and ranking.is_better(direction, pending.model_value, chosen.model_value):
        where = (
            f"still {pending.job.status}; a job uploads its model when it ends"
            if not pending.job.ended
            else f"which wrote no model (its status is {pending.job.status}"
            + (f": {pending.job.failure_reason})" if pending.job.failure_reason else ")")
        )
        raise UserError(
            f"The study's best so far (value {pending.model_value:.6g}, trial {pending.model_trial}) "
            f"is kept by training job '{pending.job.name}', {where} (best among jobs with a model: "
            f"value {chosen.model_value:.6g}, job '{chosen.job.name}')"
        )
    notes = listing_notes + sorted({r.note for r in found if r.note})
    quiet = [r.job.name for r in found if not r.job.ended and r.metrics_from is None]
    if quiet:
        notes.append(f"Not counted, still running without metrics yet: {', '.join(quiet)}")
    silent = [f"{r.job.name} ({r.job.status})" for r in found if r.job.ended and r.model_value is None]
    if silent:
        notes.append(f"Not counted, ended without reporting a model: {', '.join(silent)}")
    reported = _reported_study_best(direction, found)
    if reported and ranking.is_better(direction, reported["value"], chosen.model_value):
        notes.append(
            f"Job '{reported['reported_by']}' saw a better trial in the study (trial "
            f"{reported['trial']}, value {reported['value']:.6g}) than any model the jobs found here "
            "report: the job that ran it is not among them (see --job-prefix) or ended without "
            "reporting its model"
        )
    url = jobs.check_wrote_model(chosen.job)
    held, params = None, {}
    if s3 is not None:
        record = artifacts.read_model_record(s3, url, chosen.job.name)
        if record.study_name not in (None, study_name):
            raise UserError(f"{url} holds a model of study '{record.study_name}', not of '{study_name}'")
        if chosen.model_trial is not None and record.trial_number != chosen.model_trial:
            raise UserError(
                f"{url} holds trial {record.trial_number}, not trial {chosen.model_trial} that job "
                f"'{chosen.job.name}' reported as its model"
            )
        held, params = record.trial_number, dict(record.params)
    trial = chosen.model_trial if chosen.model_trial is not None else held
    assert chosen.model_value is not None  # _winner picks finite values only
    best = BestModel(
        study_name=study_name,
        direction=direction,
        trial_number=-1 if trial is None else trial,
        value=float(chosen.model_value),
        params=params,
        job=chosen.job,
        model_data_url=url,
        model_trial_number=held,
    )
    return best, notes


def status_text(doc: dict[str, Any]) -> str:
    """``status``'s text when the jobs are the source."""
    states = ", ".join(f"{state} {n}" for state, n in sorted(doc["job_states"].items()))
    trials = "trials finished: " + ("-" if doc["trials"] is None else str(doc["trials"]))
    lines = [f"Study '{doc['study']}' ({doc['direction']}) from its jobs: {states}; {trials}"]
    best = doc["best"]
    if best is None:
        lines.append("Best: no job has reported a model yet")
    else:
        lines.append(
            f"Best: trial {output.cell(best['trial'])}, value {output.cell(best['value'])}, job {best['job']}"
        )
    reported = doc["study_best_reported"]
    if reported is not None:
        lines.append(
            f"Study's best as ended jobs saw it: trial {output.cell(reported['trial'])}, value "
            f"{output.cell(reported['value'])} (reported by {reported['reported_by']})"
        )
    lines += [f"Note: {note}" for note in doc["notes"]]
    lines += ["", output.table(doc["jobs"], STATUS_COLUMNS)]
    return "\n".join(lines)
