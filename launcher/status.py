"""``status``: a study's trials by state, its best trial so far, and what each job contributed.

"Best" is core/ranking.py's rule, the keeper's: a finite value, the earliest of equals.

Read from the study's database only; with ``describe_jobs`` each job's SageMaker status and
FailureReason are added (one DescribeTrainingJob per job).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from core import ranking
from hpo_study import standings
from hpo_study.constants import ATTR_JOB_NAME
from launcher import jobs

STATES = tuple(state.name for state in TrialState)  # RUNNING, COMPLETE, PRUNED, FAIL, WAITING
NO_JOB = None  # trials not run by a training job (e.g. enqueued by hand)
UNKNOWN_JOB = "not found"  # a job name SageMaker does not know (expired, other region, local run)


def _trial(trial: FrozenTrial | None) -> dict[str, Any] | None:
    if trial is None:
        return None
    return {
        "trial": trial.number,
        "value": trial.value,
        "params": trial.params,
        "job": trial.user_attrs.get(ATTR_JOB_NAME),
    }


def summary(study: optuna.Study, sagemaker: Any | None = None) -> dict[str, Any]:
    """Counts by state, the best trial, and one entry per job (in order of first trial).

    Reads each trial's number, state, value and job name, and the best trial in full
    (hpo_study/standings.py), not every trial's parameters and attributes.
    """
    rows = standings.trial_rows(study)
    per_job: dict[str | None, dict[str, Any]] = {}
    for row in rows:
        name = row.job if row.job is not None else NO_JOB
        entry = per_job.setdefault(name, {"job": name, "trials": 0, **dict.fromkeys(STATES, 0), "best": None})
        entry["trials"] += 1
        entry[row.state.name] += 1
        if row.state == TrialState.COMPLETE and row.value is not None:
            if ranking.is_better(study.direction.name, row.value, entry["best"]):
                entry["best"] = row.value
    if sagemaker is not None:
        for name, entry in per_job.items():
            entry.update(_sagemaker_state(sagemaker, name))
    counts = Counter(row.state.name for row in rows)
    return {
        "study": study.study_name,
        "direction": study.direction.name.lower(),
        "trials": len(rows),
        "states": {state: counts.get(state, 0) for state in STATES},
        "best": _trial(standings.best_trial(study, rows)),
        "jobs": list(per_job.values()),
    }


def _sagemaker_state(sagemaker: Any, name: str | None) -> dict[str, Any]:
    # A study outlives its jobs, and jobs may have run elsewhere: an unknown job is reported.
    state = None if name is None else jobs.find(sagemaker, name)
    if state is None:
        return {"status": UNKNOWN_JOB if name else None, "failure_reason": None}
    return {"status": state.status, "failure_reason": state.failure_reason}
