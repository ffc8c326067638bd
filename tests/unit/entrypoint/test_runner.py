"""The trial runner and the job heartbeat (entrypoint/trials/runner.py), in process: failing, hanging and
taken-over trials."""

import logging
import threading
import time
import traceback

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from entrypoint.job.context import JobContext
from entrypoint.model.checkpoint import Progress
from entrypoint.trials.runner import Heartbeat, TrialRunner
from hpo_study import settings as settings_mod
from tests.support import services


def runner_for(tmp_path, objective, guard, **hps):
    s = settings_mod.parse({"heartbeat-interval": "1", "heartbeat-grace-period": "5", **hps})
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{tmp_path / 'db.sqlite'}", heartbeat_interval=1, grace_period=5
    )
    study = optuna.create_study(storage=storage, direction="maximize")
    return study, TrialRunner(
        JobContext(s, "job", guard), study, storage, objective, Progress(None, "s", "job")
    )


@pytest.mark.unit
def test_a_failing_trial_is_recorded_and_the_job_goes_on(tmp_path, guard):
    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:
            raise MemoryError("out of memory in trial 1")
        return x

    study, runner = runner_for(tmp_path, objective, guard, **{"n-trials": "4"})
    assert runner.run() == 4
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert study.trials[1].user_attrs["fail_reason"] == "MemoryError: out of memory in trial 1"


@pytest.mark.unit
def test_a_hanging_trial_is_ended_by_its_time_limit(tmp_path, guard):
    def objective(trial):
        trial.suggest_float("x", 0, 1)
        if trial.number == 0:
            time.sleep(3600)  # the scenario: a trial that hangs, ended by trial-timeout
        return 1.0

    study, runner = runner_for(tmp_path, objective, guard, **{"n-trials": "2", "trial-timeout": "1"})
    t0 = time.monotonic()
    assert runner.run() == 2
    assert time.monotonic() - t0 < 10
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "ran longer than trial-timeout (1 s)" in study.trials[0].user_attrs["fail_reason"]


@pytest.mark.unit
@pytest.mark.parametrize("then", ["report", "raise"])
def test_a_trial_taken_over_by_another_job_is_left_to_it(tmp_path, guard, caplog, then):
    """After a long outage another job's stale sweep may fail a trial that is still running here."""
    storages = {}

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 0:  # what the other job's sweep does to this trial
            storages["rdb"].set_trial_state_values(trial._trial_id, TrialState.FAIL)
            if then == "report":
                trial.report(x, 1)
            raise RuntimeError("diverged")
        return x

    study, runner = runner_for(tmp_path, objective, guard, **{"n-trials": "3"})
    storages["rdb"] = runner.storage
    assert runner.run() == 3
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert "fail_reason" not in trials[0].user_attrs
    assert "Trial 0 was ended by another job (FAIL)" in caplog.text


@pytest.mark.unit
def test_the_job_heartbeat_beats_for_a_long_trial_only(tmp_path, guard):
    from entrypoint.study.heartbeat import HeartbeatStorage

    storage = HeartbeatStorage(f"sqlite:///{tmp_path / 'hb.sqlite'}", heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(storage=storage, direction="maximize")
    seen = {}

    def beats(trial_id):
        with storage.engine.connect() as conn:
            q = "SELECT COUNT(*) FROM trial_heartbeats WHERE trial_id = :t"
            return conn.execute(sqlalchemy.text(q), {"t": trial_id}).scalar()

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:  # longer than the interval: runs until its first beat
            services.wait_for(lambda: beats(trial._trial_id), 30, "a heartbeat of the long trial")
        seen[trial.number] = beats(trial._trial_id)
        return x

    s = settings_mod.parse({"heartbeat-interval": "1", "heartbeat-grace-period": "3", "n-trials": "2"})
    runner = TrialRunner(JobContext(s, "job", guard), study, storage, objective, Progress(None, "s", "job"))
    assert runner.run() == 2
    assert seen == {0: 0, 1: 1}


@pytest.mark.unit
def test_a_failed_heartbeat_logs_its_cause_and_keeps_beating(caplog):
    """The warning names the error's message, the debug record carries its traceback."""
    calls = threading.Semaphore(0)

    class Unreachable:
        def record_heartbeat(self, trial_id):
            calls.release()
            raise OSError("socket closed by peer")

    caplog.set_level(logging.DEBUG, logger="entrypoint.trials.runner")
    with Heartbeat(Unreachable(), interval=0.05) as heartbeat, heartbeat.beating(7):
        # The second beat starts after the first one's failure was logged.
        assert calls.acquire(timeout=10) and calls.acquire(timeout=10)
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert warning.getMessage() == "Heartbeat of trial id 7 not recorded: OSError: socket closed by peer"
    debug = next(r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info)
    assert "socket closed by peer" in "".join(traceback.format_exception(*debug.exc_info))
