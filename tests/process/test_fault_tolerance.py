"""Stops, spot restarts, killed jobs, database outages, failing and hanging trials: real
processes, real signals, real MariaDB."""

import json
import logging
import os
import shutil
import signal
import threading
import time
import traceback

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from entrypoint import settings as settings_mod
from entrypoint.checkpoint import Progress
from entrypoint.job import JobContext
from entrypoint.runner import Heartbeat, TrialRunner
from entrypoint.stopping import Guard
from tests.support import services
from tests.support.jobs import (
    FINISHED,
    Followed,
    finish,
    job_on_private_db,
    npz,
    start_job,
    study_of,
    wait_for_training,
)


def embedded_study(base):
    return optuna.load_study(
        study_name="spot", storage=f"sqlite:///{base / 'checkpoints' / 'optuna-study.db'}"
    )


@pytest.mark.process
def test_sigterm_then_spot_restart_resumes_the_budget(job_dir, moto_endpoint):
    base = job_dir({"study-name": "spot", "n-trials": "4", "epochs": "150", "pruner": "none", "seed": "3"})
    (base / "checkpoints").mkdir()
    proc = start_job(base, "spot-job", moto_endpoint)
    wait_for_training(lambda: embedded_study(base), 1)
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    rc, out, err = finish(proc, timeout=120)
    stop_s = time.monotonic() - t0
    assert rc == 0, err[-2000:]
    print(f"stopped {stop_s:.2f} s after SIGTERM")
    assert stop_s < 30, f"took {stop_s:.1f} s to stop"
    assert not (base / "output" / "failure").exists()
    trials = embedded_study(base).trials
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert len(interrupted) == 1 and interrupted[0].user_attrs["fail_reason"].startswith("interrupted")
    queued = [t for t in trials if t.state == TrialState.WAITING]
    assert len(queued) == 1 and queued[0].params == interrupted[0].params
    assert queued[0].system_attrs["failed_trial"] == interrupted[0].number
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    meta = json.loads((base / "model" / "model.json").read_text())
    assert trials[meta["trial_number"]].state == TrialState.COMPLETE
    assert (base / "output" / "data" / "trials.csv").is_file()
    assert (base / "output" / "data" / "optuna-study.db").is_file()
    done_before = json.loads((base / "checkpoints" / "progress.json").read_text())["finished_trials"]
    assert 1 <= len(done_before) < 4

    # Spot restart: a new instance, only /opt/ml/checkpoints comes back.
    for lost in ("model", "output"):
        shutil.rmtree(base / lost)
    (base / "model").mkdir()
    rc, out, err = finish(start_job(base, "spot-job", moto_endpoint))
    assert rc == 0, err[-2000:]
    assert "Restored the best model" in err
    progress = json.loads((base / "checkpoints" / "progress.json").read_text())["finished_trials"]
    assert progress[: len(done_before)] == done_before and len(progress) == 4
    trials = embedded_study(base).trials
    assert len([t for t in trials if t.state in FINISHED]) == 4
    rerun = trials[progress[len(done_before)]]
    assert rerun.system_attrs.get("failed_trial") == interrupted[0].number
    assert "fail_reason" not in rerun.user_attrs  # not inherited from the interrupted trial
    meta = json.loads((base / "model" / "model.json").read_text())
    assert meta["value"] == max(t.value for t in trials if t.state == TrialState.COMPLETE)
    assert sorted(p.name for p in (base / "model").iterdir()) == ["model.json", meta["weights_file"]]


@pytest.mark.process
def test_database_restart_mid_run_loses_and_doubles_nothing(
    private_mariadb, private_db, moto_endpoint, aws, job_dir
):
    base, proc = job_on_private_db(private_db, aws, job_dir, moto_endpoint, "outage", n_trials=4, retry_s=120)
    job = Followed(proc)
    private_mariadb.stop()
    try:  # the database stays away until the job has met the outage (fails if the job died of it)
        job.wait_for_stderr("Database unavailable", 120)
        assert proc.poll() is None, "the job died with the database"
    finally:
        private_mariadb.start()
    rc, out, err = job.finish()
    assert rc == 0, err[-3000:]
    assert "Database unavailable" in err
    trials = study_of(private_db).trials
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == 4 and len({t.number for t in finished}) == 4
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert json.loads((base / "model" / "model.json").read_text())["trial_number"] in {
        t.number for t in finished
    }


@pytest.mark.process
def test_database_gone_for_good_fails_clearly_and_keeps_the_model(
    private_mariadb, private_db, moto_endpoint, aws, job_dir
):
    base, proc = job_on_private_db(
        private_db, aws, job_dir, moto_endpoint, "abandoned", n_trials=50, retry_s=4
    )
    private_mariadb.stop()
    try:
        rc, _, err = finish(proc, timeout=180)
    finally:
        private_mariadb.start()
    assert rc == 1
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("The database was unreachable for longer than db-retry-timeout (4 s)"), failure
    assert "Traceback" not in failure
    meta = json.loads((base / "model" / "model.json").read_text())
    assert (base / "model" / meta["weights_file"]).is_file()


@pytest.mark.process
def test_diverging_trials_fail_with_a_reason_then_stop_the_job(job_dir, moto_endpoint, small_digits):
    x, y = small_digits["train"]
    base = job_dir({"n-trials": "5", "epochs": "2", "max-consecutive-failures": "2", "study-name": "spot"})
    npz(base / "input" / "data" / "train" / "data.npz", x=x * 3e38, y=y)  # finite, but overflows float32 math
    (base / "checkpoints").mkdir()
    rc, _, err = finish(start_job(base, "nan", moto_endpoint))
    assert rc == 1
    failure = (base / "output" / "failure").read_text()
    assert (
        "2 trials failed in a row (max-consecutive-failures)" in failure and "FloatingPointError" in failure
    )
    trials = embedded_study(base).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all("diverged" in t.user_attrs["fail_reason"] for t in trials)


@pytest.fixture
def guard():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGALRM)}
    g = Guard()
    g.install()
    yield g
    for s, handler in saved.items():
        signal.signal(s, handler)


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


@pytest.mark.process
def test_trial_timeout_through_the_train_command(job_dir, moto_endpoint):
    base = job_dir({"n-trials": "2", "epochs": "10000", "trial-timeout": "2", "study-name": "spot"})
    (base / "checkpoints").mkdir()
    rc, _, err = finish(start_job(base, "slow", moto_endpoint))
    assert rc == 1, err[-2000:]  # no trial of the job completed: a failed job (issue 15)
    assert (base / "output" / "failure").read_text().startswith("None of the 2 trials this job ran completed")
    trials = embedded_study(base).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    reasons = [t.user_attrs.get("fail_reason") for t in trials]
    assert all("trial-timeout" in str(r) for r in reasons), reasons
    assert not (base / "model" / "model.json").exists()


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


@pytest.mark.services
def test_connections_closed_by_the_server_while_idle_are_replaced(
    private_mariadb, private_db, aws, guard, caplog
):
    """No pre-ping: a pooled connection that the server dropped (wait_timeout) fails once and the
    call is retried on a new one."""
    from entrypoint import search, storage

    secret = aws({"username": private_db.user, "password": private_db.password})
    s = settings_mod.parse(
        {
            "host": "127.0.0.1",
            "db-port": str(private_db.port),
            "db-name": private_db.name,
            "db-secret": secret,
            "region-name": services.REGION,
            "n-trials": "3",
            "db-retry-timeout": "30",
        }
    )
    root = services.mariadb_root(port=private_mariadb.port)
    root.cursor().execute("SET GLOBAL wait_timeout = 1")  # for the connections opened from now
    try:
        db = storage.resolve(s, "/nonexistent-output")
        study, rdb = storage.join_study(s, db, search.make_sampler(s, 0), search.make_pruner(s))

        def no_connection_left() -> bool:
            cursor = root.cursor()
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s", (private_db.user,)
            )
            return cursor.fetchone()[0] == 0

        def objective(trial):
            x = trial.suggest_float("x", 0, 1)
            # The pooled connection idles past wait_timeout, until the server has closed it.
            services.wait_for(no_connection_left, 30, "the server closing the idle pooled connection")
            return x

        runner = TrialRunner(JobContext(s, "job", guard), study, rdb, objective, Progress(None, "s", "job"))
        assert runner.run() == 3
    finally:
        root.cursor().execute("SET GLOBAL wait_timeout = 28800")
    assert "Database unavailable while finishing a trial" in caplog.text  # the drop did happen
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 3


@pytest.mark.unit
def test_the_job_heartbeat_beats_for_a_long_trial_only(tmp_path, guard):
    from entrypoint.storage import HeartbeatStorage

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

    caplog.set_level(logging.DEBUG, logger="entrypoint.runner")
    with Heartbeat(Unreachable(), interval=0.05) as heartbeat, heartbeat.beating(7):
        # The second beat starts after the first one's failure was logged.
        assert calls.acquire(timeout=10) and calls.acquire(timeout=10)
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert warning.getMessage() == "Heartbeat of trial id 7 not recorded: OSError: socket closed by peer"
    debug = next(r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info)
    assert "socket closed by peer" in "".join(traceback.format_exception(*debug.exc_info))
