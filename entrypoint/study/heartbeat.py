"""The job's RDB storage: Optuna's, whose stale-trial sweep also fails trials that never beat."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy

from hpo_study import optuna_private


class HeartbeatStorage(optuna_private.StaleSweepStorage):
    """Optuna's RDB storage, whose stale-trial sweep also fails trials that never beat.

    Our heartbeat thread records a trial's first beat up to one interval after it starts, not
    at its start: one write less per trial, so short trials never pay for heartbeats. Optuna's
    sweep skips RUNNING trials that have no heartbeat, so a job that died before its first beat
    (or lost its connection between creating a trial and reading it back) would leave the trial
    RUNNING forever. Here such a trial is stale once this process has seen it RUNNING without a
    heartbeat for longer than interval + grace period, timed by this process's monotonic clock:
    no comparison of clocks across machines or time zones. Every job on a study must use the
    same heartbeat settings (as with Optuna's own sweep). Optuna has no hook for this: the
    adapter's StaleSweepStorage gives one (tests/services/test_storage.py covers it).
    """

    def __init__(
        self,
        url: str,
        *,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period, **kwargs)
        self._silent_limit_s = (grace_period or 0) + (heartbeat_interval or 0)
        self._silent_since: dict[int, float] = {}  # trial id -> when first seen without beats
        self.clock = time.monotonic

    def running_beats(self, study_id: int, within_s: float) -> tuple[list[int], dict[int, Any]]:
        """The study's RUNNING trials in one read, by their last heartbeat's age (the database's
        clock, like Optuna's sweep): those without a beat for ``within_s`` or without any
        (lapsed), and those that beat within it: trial id -> that beat (a live job's, or the last
        of a job that just died)."""
        with optuna_private.engine(self).connect() as conn:
            now = conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar().replace(tzinfo=None)
            rows = optuna_private.running_heartbeats(conn, study_id)
        lapsed, recent = [], {}
        for tid, beat in rows:
            if beat is not None and (now - beat.replace(tzinfo=None)).total_seconds() <= within_s:
                recent[tid] = beat
            else:
                lapsed.append(tid)
        return lapsed, recent

    def more_stale_trial_ids(self, study_id: int, stale: list[int]) -> list[int]:
        """RUNNING trials seen without any heartbeat for longer than interval + grace period."""
        with optuna_private.engine(self).connect() as conn:
            silent = [tid for tid, beat in optuna_private.running_heartbeats(conn, study_id) if beat is None]
        now = self.clock()
        self._silent_since = {tid: self._silent_since.get(tid, now) for tid in silent}
        return [tid for tid, since in self._silent_since.items() if now - since > self._silent_limit_s]
