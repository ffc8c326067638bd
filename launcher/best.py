"""``best``: the study's best trial and the model.tar.gz that holds its model.

Each job keeps its own best trial's model in its model.tar.gz, so the study's best model is
in the archive of the job named on the best trial (user attribute ``job_name``). The archive's
``model.json`` is read to confirm it holds that very trial: the best trial is chosen by the
keeper's own rule (core/ranking.py: a finite value, the earliest of equals), so it is the
model its job kept.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from core.artifact import ModelRecord
from core.errors import UserError
from hpo_study import standings
from hpo_study.constants import ATTR_JOB_NAME
from launcher import artifacts, jobs


@dataclasses.dataclass(frozen=True)
class BestModel:
    study_name: str
    direction: str
    trial_number: int
    value: float
    params: dict[str, Any]
    job: jobs.JobState
    model_data_url: str
    model_trial_number: int | None  # the trial model.json names; None when not verified

    def as_dict(self) -> dict[str, Any]:
        return {
            "study": self.study_name,
            "direction": self.direction,
            "trial": self.trial_number,
            "value": self.value,
            "params": self.params,
            "job": self.job.name,
            "job_status": self.job.status,
            "model_data_url": self.model_data_url,
            "model_trial": self.model_trial_number,
            "image": self.job.image,
        }


def require_best_trial(study: optuna.Study) -> FrozenTrial:
    """The best COMPLETE trial by core/ranking.py's rule; a study without one is a user error.

    Reads each trial's number, state and value, and the best trial in full (hpo_study/standings.py).
    """
    rows = standings.trial_rows(study)
    if not any(row.state == TrialState.COMPLETE for row in rows):
        raise UserError(f"Study '{study.study_name}' has no completed trial yet")
    best = standings.best_trial(study, rows)
    if best is None:  # every value is infinite: no job kept a model of them
        raise UserError(f"Study '{study.study_name}' has no completed trial with a finite value")
    return best


def _check_record(record: ModelRecord, trial: FrozenTrial, study_name: str, url: str) -> int:
    if record.study_name != study_name:
        raise UserError(f"{url} holds a model of study '{record.study_name}', not of '{study_name}'")
    if record.trial_number != trial.number:
        raise UserError(
            f"{url} holds trial {record.trial_number} (value {record.value}), not the study's best "
            f"trial {trial.number} (value {trial.value})"
        )
    return record.trial_number


def find(study: optuna.Study, sagemaker: Any, s3: Any | None) -> BestModel:
    """Locate the best trial's model; with ``s3``, also read its model.json to confirm it."""
    trial = require_best_trial(study)
    job_name = trial.user_attrs.get(ATTR_JOB_NAME)
    if not job_name:
        raise UserError(
            f"Best trial {trial.number} of study '{study.study_name}' names no training job "
            f"(user attribute '{ATTR_JOB_NAME}'): was it run outside a training job?"
        )
    try:
        job = jobs.describe(sagemaker, job_name)
    except UserError as exc:
        raise UserError(f"Best trial {trial.number} was run by job '{job_name}': {exc}") from None
    url = jobs.check_wrote_model(job)
    held = None
    if s3 is not None:
        held = _check_record(artifacts.read_model_record(s3, url, job_name), trial, study.study_name, url)
    return BestModel(
        study_name=study.study_name,
        direction=study.direction.name.lower(),
        trial_number=trial.number,
        value=float(trial.value),
        params=dict(trial.params),
        job=job,
        model_data_url=url,
        model_trial_number=held,
    )
