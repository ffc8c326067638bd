"""Stops, spot restarts, database outages, diverging and hanging trials: real `train` processes,
real signals, real MariaDB."""

import json
import os
import shutil
import signal
import time

import optuna
import pytest
from optuna.trial import TrialState

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
