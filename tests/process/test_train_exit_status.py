"""The real `train` command never exits 0 on a failure and says why in one line: full and
read-only folders (small tmpfs mounts, as root), bad hyperparameters, every trial failed, a met
budget, a database outage past db-retry-timeout, on a real MariaDB."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from optuna.trial import TrialState

from tests.support import services
from tests.support.jobs import (
    FINISHED,
    finish,
    job_on_private_db,
    kill_a_job_mid_trial,
    run_train,
    start_job,
    study_of,
    tmpfs,
)

# --- the real `train` command on full and read-only folders ---------------------------------------


@pytest.mark.process
@pytest.mark.parametrize("how", ["read-only", "full"])
def test_unwritable_output_folder_and_a_bad_hyperparameter_never_exit_0(job_dir, how):
    base = job_dir({"n-trials": "many"})
    kwargs = {"read_only": True} if how == "read-only" else {"fill_to_kb": 1024}
    with tmpfs(base / "output", "1m", **kwargs):
        result = run_train(base)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "'n-trials' must be an integer" in result.stderr
    if how == "read-only":
        assert "Could not write the failure file" in result.stderr


@pytest.mark.process
def test_read_only_model_folder_fails_before_any_trial(job_dir):
    base = job_dir({"n-trials": "2", "epochs": "1"})
    with tmpfs(base / "model", "1m", read_only=True):
        result = run_train(base)
    assert result.returncode == 1, result.stderr[-2000:]
    failure = (base / "output" / "failure").read_text()
    assert failure.count("\n") <= 1 and "Traceback" not in failure
    assert f"model folder {base / 'model'}" in failure and "Read-only file system" in failure
    assert not (base / "output" / "data" / "optuna-study.db").exists()


@pytest.mark.process
def test_full_model_folder_is_one_line_and_exit_1(job_dir):
    base = job_dir({"n-trials": "2", "epochs": "1", "seed": "1"})
    with tmpfs(base / "model", "64k", fill_to_kb=56):
        result = run_train(base)
    assert result.returncode == 1, result.stderr[-2000:]
    failure = (base / "output" / "failure").read_text()
    assert failure.count("\n") <= 1 and "Traceback" not in failure
    assert f"model folder {base / 'model'}" in failure and "No space left on device" in failure


# --- a job that ran trials and completed none fails ----------------------------------------


@pytest.mark.process
def test_a_job_whose_every_trial_failed_fails_with_the_last_reason(job_dir):
    base = job_dir({"n-trials": "2", "epochs": "1000", "trial-timeout": "0.5"})
    result = run_train(base)
    assert result.returncode == 1, result.stderr[-2000:]
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("None of the 2 trials this job ran completed"), failure
    assert "ran longer than trial-timeout" in failure
    assert not (base / "model" / "model.json").exists()


@pytest.mark.process
def test_a_job_that_finds_the_budget_met_exits_0_without_a_model(job_dir):
    base = job_dir({"n-trials": "2", "epochs": "1", "max-trials": "1", "study-name": "met"})
    first = run_train(base, TRAINING_JOB_NAME="first")
    assert first.returncode == 0, first.stderr[-2000:]
    for path in (base / "model").iterdir():
        path.unlink()
    second = run_train(base, TRAINING_JOB_NAME="second")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "nothing to run" in second.stderr
    assert list((base / "model").iterdir()) == []
    assert json.loads((base / "output" / "data" / "best_trial.json").read_text())["number"] == 0
    assert not (base / "output" / "failure").exists()


# --- jobs on a real MariaDB -------------------------------------------------------


@pytest.mark.process
def test_an_outage_past_db_retry_timeout_ends_the_job_on_time(
    private_mariadb, private_db, moto_endpoint, aws, job_dir
):
    base, proc = job_on_private_db(
        private_db, aws, job_dir, moto_endpoint, "bounded", n_trials=50, retry_s=10
    )
    t0 = time.monotonic()
    private_mariadb.stop()
    try:
        rc, _, err = finish(proc, timeout=180)
        elapsed = time.monotonic() - t0
    finally:
        private_mariadb.start()
    print(f"failed {elapsed:.1f} s after the outage began (db-retry-timeout 10 s)")
    assert rc == 1, err[-2000:]
    assert (base / "output" / "failure").read_text().startswith("The database was unreachable")
    assert elapsed < 10 + 5, err[-3000:]


@pytest.mark.process
def test_a_met_budget_leaves_no_running_trial_of_a_killed_job(shared_job, mysql_db, moto_endpoint):
    beat = {"heartbeat-interval": "1", "heartbeat-grace-period": "15"}
    kill_a_job_mid_trial(shared_job, mysql_db, moto_endpoint, beat)
    # Well within the grace period, another job reaches the study's cap and ends.
    rc, _, err = finish(
        start_job(
            shared_job("finisher", **{"n-trials": "5", "max-trials": "1", **beat}), "finisher", moto_endpoint
        )
    )
    assert rc == 0, err[-2000:]
    trials = study_of(mysql_db).trials
    assert [t.number for t in trials if t.state == TrialState.RUNNING] == [], err[-3000:]
    assert trials[0].state == TrialState.FAIL
    assert len([t for t in trials if t.state in FINISHED]) >= 1


@pytest.mark.process
def test_a_met_budget_does_not_wait_for_live_jobs(shared_job, mysql_db, moto_endpoint):
    beat = {"heartbeat-interval": "2", "heartbeat-grace-period": "60"}
    alive = start_job(
        shared_job("alive", **{"n-trials": "1", "epochs": "10000", **beat}), "alive", moto_endpoint
    )
    try:
        services.wait_for(
            lambda: any(t.state == TrialState.RUNNING and t.params for t in study_of(mysql_db).trials),
            120,
            "a trial in training",
        )
        t0 = time.monotonic()
        rc, _, err = finish(
            start_job(
                shared_job("finisher", **{"n-trials": "5", "max-trials": "1", **beat}),
                "finisher",
                moto_endpoint,
            )
        )
        assert rc == 0, err[-2000:]
        assert time.monotonic() - t0 < 40, "waited for a live job's trial"
        assert study_of(mysql_db).trials[0].state == TrialState.RUNNING
    finally:
        os.killpg(alive.pid, signal.SIGKILL)
        alive.wait(timeout=30)
