"""Lean reads and writes of a trial's rows, for the calls a job makes every epoch and every trial.

Optuna's RDB storage spends four round trips (and, on SQLite, a commit to disk) on every
``trial.report`` and three per ``set_user_attr``; ``trial.should_prune`` hands the pruner the
whole study, which a median pruner then scans at every epoch. Here a trial's intermediate
values and metrics are written once, in one transaction, before the trial is told finished
(the median pruner of other jobs reads COMPLETE trials only), and :class:`CompletedValues`
reads each finished trial once.

Written by hand against Optuna's own table definitions (through hpo_study/optuna_private.py,
which checks the Optuna version): Optuna has no public batch write and no incremental read. Any other storage (the
in-memory one of the tests and benchmarks) goes through Optuna's public calls.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Mapping
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import TrialState

from hpo_study import optuna_private
from hpo_study.optuna_private import INTERMEDIATE_VALUES as VALUES
from hpo_study.optuna_private import TRIALS, USER_ATTRS, rdb_of


def _finished(trial_id: int) -> optuna.exceptions.UpdateFinishedTrialError:
    return optuna.exceptions.UpdateFinishedTrialError(
        f"Trial#{trial_id} has already finished (another job may have ended it) and cannot be updated."
    )


def record(trial: optuna.Trial, values: Mapping[int, float], attrs: Mapping[str, Any]) -> None:
    """A RUNNING trial's intermediate values (step -> value) and user attributes, in one
    transaction (three round trips, whatever their number); raises UpdateFinishedTrialError
    when the trial is no longer RUNNING, as Optuna does."""
    rdb = rdb_of(trial.study)
    if rdb is None:
        for step, value in values.items():
            trial.report(value, step)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    tid = optuna_private.trial_id(trial)
    value_rows = []
    for step, value in values.items():
        stored, kind = optuna_private.stored_value(float(value))
        value_rows.append(
            {"trial_id": tid, "step": step, "intermediate_value": stored, "intermediate_value_type": kind}
        )
    attr_rows = [
        {"trial_id": tid, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()
    ]
    # A retry after a lost commit deletes and inserts again, so it never meets its own rows.
    with optuna_private.engine(rdb).begin() as conn:
        state = conn.execute(
            sqlalchemy.select(TRIALS.c.state).where(TRIALS.c.trial_id == tid).with_for_update()
        ).scalar_one()
        if state.is_finished():
            raise _finished(tid)
        # Replaces earlier rows of the same steps and keys (as report and set_user_attr do).
        if value_rows:
            conn.execute(VALUES.delete().where(VALUES.c.trial_id == tid, VALUES.c.step.in_(list(values))))
            conn.execute(VALUES.insert(), value_rows)
        if attr_rows:
            conn.execute(
                USER_ATTRS.delete().where(USER_ATTRS.c.trial_id == tid, USER_ATTRS.c.key.in_(list(attrs)))
            )
            conn.execute(USER_ATTRS.insert(), attr_rows)


class CompletedValues:
    """The intermediate values of a study's COMPLETE trials, step by step, kept sorted.

    Finished trials never change, so each is read once: every refresh asks the database only
    for trials newer than the newest seen, and for those seen unfinished (one query). The cost
    of a refresh and of a percentile is flat in the size of the study.
    """

    def __init__(self) -> None:
        self.n_complete = 0
        self._sorted: dict[int, list[float]] = {}  # step -> non-NaN values, ascending
        self._counts: dict[int, int] = {}  # step -> number of values, NaN included
        self._newest = -1  # the largest trial id seen
        self._open: set[int] = set()  # ids up to _newest seen unfinished
        self._seen: set[int] = set()  # for storages read without the incremental query

    def add(self, values: Mapping[int, float]) -> None:
        """Count one completed trial's intermediate values."""
        self.n_complete += 1
        for step, value in values.items():
            self._counts[step] = self._counts.get(step, 0) + 1
            if not math.isnan(value):
                bisect.insort(self._sorted.setdefault(step, []), value)

    def count(self, step: int) -> int:
        return self._counts.get(step, 0)

    def percentile(self, step: int, q: float) -> float:
        """``numpy.nanpercentile`` (linear interpolation) of the values at ``step``."""
        values = self._sorted.get(step)
        if not values:
            return math.nan
        pos = (len(values) - 1) * (q / 100.0)  # numpy's virtual index for 'linear'
        lo = math.floor(pos)
        hi = min(lo + 1, len(values) - 1)
        frac = pos - lo
        # numpy's lerp: exact at both ends, the same rounding as nanpercentile
        low, high = values[lo], values[hi]
        return high - (high - low) * (1 - frac) if frac >= 0.5 else low + (high - low) * frac

    def refresh(self, study: optuna.Study) -> None:
        rdb = rdb_of(study)
        if rdb is None:
            for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                if optuna_private.trial_id(trial) not in self._seen:
                    self._seen.add(optuna_private.trial_id(trial))
                    self.add(trial.intermediate_values)
            return
        if self._newest < 0:
            # The first refresh of a job: the study's trials are in Optuna's cache already (the
            # sampler read them at this trial's ask), so take them from there instead of reading
            # every completed trial's values once more (0.4-0.7 s at 5,000 trials on MariaDB).
            self.seed(study.get_trials(deepcopy=False))
            if self._newest >= 0:
                return
        with optuna_private.engine(rdb).connect() as conn:
            self.refresh_from(conn, optuna_private.study_id(study))

    def seed(self, trials: list[optuna.trial.FrozenTrial]) -> None:
        """Start from trials already read (all of a study's, any state)."""
        for trial in trials:
            tid = optuna_private.trial_id(trial)
            self._newest = max(self._newest, tid)
            if not trial.state.is_finished():
                self._open.add(tid)
            elif trial.state == TrialState.COMPLETE:
                self.add(trial.intermediate_values)

    def refresh_from(self, conn: sqlalchemy.Connection, study_id: int) -> None:
        """Read what is new since the last refresh, on an open connection."""
        complete = TRIALS.c.state == TrialState.COMPLETE
        which = TRIALS.c.trial_id > self._newest
        if self._open:
            which = sqlalchemy.or_(which, TRIALS.c.trial_id.in_(sorted(self._open)))
        query = (
            sqlalchemy.select(
                TRIALS.c.trial_id,
                TRIALS.c.state,
                VALUES.c.step,
                VALUES.c.intermediate_value,
                VALUES.c.intermediate_value_type,
            )
            .select_from(
                TRIALS.outerjoin(VALUES, sqlalchemy.and_(VALUES.c.trial_id == TRIALS.c.trial_id, complete))
            )
            .where(TRIALS.c.study_id == study_id, which)
        )
        rows = conn.execute(query).all()
        states: dict[int, TrialState] = {}
        values: dict[int, dict[int, float]] = {}
        for trial_id, state, step, stored, kind in rows:
            states[trial_id] = state
            values.setdefault(trial_id, {})
            if step is not None:
                values[trial_id][step] = optuna_private.value_from_stored(stored, kind)
        for trial_id, state in states.items():
            self._newest = max(self._newest, trial_id)
            if not state.is_finished():
                self._open.add(trial_id)
                continue
            self._open.discard(trial_id)
            if state == TrialState.COMPLETE:
                self.add(values[trial_id])
