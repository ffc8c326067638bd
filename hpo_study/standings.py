"""The study's standings: its best trial, the one function for it (``status``, ``best``, the report's
best_trial.json; its rule is core/ranking.py's, the keeper's), and the lean read it stands on: one
query for every trial's number, state, value and job name, and the best trial alone in full.

Optuna's ``study.get_trials`` reads every trial's parameters, distributions, intermediate
values and attributes (about 20 rows per trial of the built-in network): 3.4 s of ``best`` at
5,000 trials on MariaDB even through the lean read (hpo_study/optuna_private.py), where
``status`` and ``best`` need four columns per trial and the parameters of one
(benchmarks/large_study.py --only cli). Other storages than Optuna's RDB one go through Optuna.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import TypeVar

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from core import ranking
from hpo_study import optuna_private
from hpo_study.constants import ATTR_JOB_NAME


@dataclasses.dataclass(frozen=True)
class TrialRow:
    """One trial as ``status`` counts it."""

    number: int
    trial_id: int
    state: TrialState
    value: float | None  # the first objective's value, if the trial has one
    job: str | None  # the job that ran it (user attribute job_name)


_Trial = TypeVar("_Trial", FrozenTrial, TrialRow)


def trial_rows(study: optuna.Study) -> list[TrialRow]:
    """Every trial of the study, in trial-number order."""
    rdb = optuna_private.rdb_of(study)
    if rdb is None:
        return [
            TrialRow(
                t.number,
                optuna_private.trial_id(t),
                t.state,
                t.values[0] if t.values else None,
                t.user_attrs.get(ATTR_JOB_NAME),
            )
            for t in study.get_trials(deepcopy=False)
        ]
    trials, values, attrs = optuna_private.TRIALS, optuna_private.VALUES, optuna_private.USER_ATTRS
    query = (
        sqlalchemy.select(
            trials.c.number,
            trials.c.trial_id,
            trials.c.state,
            values.c.value,
            values.c.value_type,
            attrs.c.value_json,
        )
        .select_from(
            trials.outerjoin(
                values, sqlalchemy.and_(values.c.trial_id == trials.c.trial_id, values.c.objective == 0)
            ).outerjoin(
                attrs, sqlalchemy.and_(attrs.c.trial_id == trials.c.trial_id, attrs.c.key == ATTR_JOB_NAME)
            )
        )
        .where(trials.c.study_id == optuna_private.study_id(study))
        .order_by(trials.c.number)
    )
    with optuna_private.engine(rdb).connect() as conn:
        rows = conn.execute(query).all()
    return [
        TrialRow(
            number,
            tid,
            state,
            None if kind is None else optuna_private.value_of_stored(stored, kind),
            None if job_json is None else json.loads(job_json),
        )
        for number, tid, state, stored, kind, job_json in rows
    ]


def best_of(study: optuna.Study, trials: Sequence[_Trial]) -> _Trial | None:
    """The best COMPLETE one of trials already read (FrozenTrials or TrialRows) by core/ranking.py's
    rule (the keeper's); None if no completed trial has a finite value. The one rule of this
    module: :func:`best_trial` and the report's best_trial.json both apply it."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return ranking.best(study.direction.name, complete, lambda t: t.value)


def best_trial(study: optuna.Study, rows: list[TrialRow] | None = None) -> FrozenTrial | None:
    """The study's best trial (:func:`best_of` over the lean rows), read in full; None if none."""
    winner = best_of(study, trial_rows(study) if rows is None else rows)
    if winner is None:
        return None
    return optuna_private.read_trial(study, winner.trial_id)
