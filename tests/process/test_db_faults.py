"""The same faults met by real `train` processes: a stall logged and waited out or past
db-retry-timeout, SIGTERM during a stall, a secret rotated while jobs run."""

import os
import signal
import time

import optuna
import pytest
from optuna.trial import TrialState

from hpo_study.database import locate
from tests.support import services
from tests.support.jobs import FINISHED, Followed, job_on_private_db, start_job, study_of, wait_for_training
from tests.support.secrets import put_password, rotate_password

# What one stalled call may cost before it fails (a read time-out, then a new connection's
# handshake time-out), plus room for a loaded machine.
ONE_STALLED_CALL_S = locate.IO_TIMEOUT_S + locate.CONNECT_TIMEOUT_S


@pytest.mark.process
def test_a_stall_is_logged_while_it_lasts_and_waited_out(
    private_mariadb, private_db, moto_endpoint, aws, job_dir
):
    base, proc = job_on_private_db(private_db, aws, job_dir, moto_endpoint, "stall", n_trials=3, retry_s=300)
    job = Followed(proc)
    with private_mariadb.stalled():
        t0 = time.monotonic()
        job.wait_for_stderr("The database has not answered for", 120)
        logged_s = time.monotonic() - t0
        job.wait_for_stderr("Database unavailable", 120)  # the read timed out: retried
        assert proc.poll() is None, "the job died of the stall"
    rc, _, err = job.finish(timeout=300)
    assert rc == 0, err[-3000:]
    print(f"stall logged {logged_s:.1f} s after it began")
    # The trial in training may first end (no database call while it trains), then its tell
    # waits, logged after SLOW_CALL_S.
    assert logged_s < 45
    assert "Database unavailable" in err and "no answer from the database server in time" in err
    trials = study_of(private_db).trials
    assert len([t for t in trials if t.state in FINISHED]) == 3
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def fails_on_time(base, proc, stalled) -> None:
    """The job (db-retry-timeout=5) fails while ``stalled()`` lasts, on time, with one line."""
    with stalled():
        t0 = time.monotonic()
        rc, _, err = Followed(proc).finish(timeout=240)
        took = time.monotonic() - t0
    assert rc == 1, err[-3000:]
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("The database was unreachable for longer than db-retry-timeout (5 s)"), failure
    assert "no answer from the database server in time" in failure
    print(f"job failed {took:.1f} s after the stall began")
    # The trial in training ends (seconds), its tell meets the stall (one stalled call), the
    # retries end at the outage's 5 s deadline (one more call at most), the summary gets one try.
    assert took < 4 * ONE_STALLED_CALL_S


@pytest.mark.process
def test_a_stall_longer_than_db_retry_timeout_fails_the_job_on_time(
    private_mariadb, private_db, moto_endpoint, aws, job_dir
):
    base, proc = job_on_private_db(private_db, aws, job_dir, moto_endpoint, "stuck", n_trials=50, retry_s=5)
    fails_on_time(base, proc, private_mariadb.stalled)


@pytest.mark.process
def test_a_stall_of_postgresql_longer_than_db_retry_timeout_fails_the_job_on_time(
    private_postgres, moto_endpoint, job_dir
):
    """libpq has no read time-out: the bounded wait (hpo_study/database/pgwait.py) makes a
    stopped PostgreSQL server fail the job as a stopped MariaDB does."""
    url = private_postgres.url_of(private_postgres.new_database())
    hps = {"storage": url, "study-name": "shared", "n-trials": "50", "epochs": "60", "pruner": "none"}
    base = job_dir({**hps, "db-retry-timeout": "5"})
    proc = start_job(base, "pg-stuck", moto_endpoint)
    wait_for_training(lambda: optuna.load_study(study_name="shared", storage=url), 1)
    fails_on_time(base, proc, private_postgres.stalled)


@pytest.mark.process
def test_sigterm_during_a_stall_ends_the_job_well_within_120_s(
    private_mariadb, private_db, moto_endpoint, aws, job_dir
):
    # Trials of ~4 s, so that the stall almost always meets a trial rather than the ask between two.
    base, proc = job_on_private_db(
        private_db, aws, job_dir, moto_endpoint, "spot", n_trials=50, retry_s=300, epochs=300
    )
    job = Followed(proc)
    with private_mariadb.stalled():
        job.wait_for_stderr("Database unavailable", 120)  # the job is waiting on the database
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        rc, _, err = job.finish(timeout=120)
        took = time.monotonic() - t0
    print(f"stopped {took:.1f} s after SIGTERM, the database stalled")
    assert took < 60, err[-3000:]  # SageMaker's SIGKILL comes at 120 s
    assert rc == 0, err[-3000:]  # a stop, not a failure
    assert "Stopping on SIGTERM while the database is away" in err
    # The stall met a trial (its end is not written) or, rarely, the ask of the next one.
    assert "Not written to the study: the end of trial" in err or "while starting a trial" in err, err[-3000:]
    assert "Not written: the study summary" in err


# --- a rotated secret -------------------------------------------------------------------------


@pytest.mark.process
def test_a_rotated_secret_is_read_again_and_the_job_goes_on(aws, mysql_db, moto_endpoint, job_dir):
    secret = aws(mysql_db.credentials())
    hps = {
        "host": "127.0.0.1",
        "db-name": mysql_db.name,
        "db-secret": secret,
        "region-name": services.REGION,
        "study-name": "shared",
        "n-trials": "4",
        "epochs": "60",
        "pruner": "none",
    }
    base = job_dir(hps)
    job = Followed(start_job(base, "rotating", moto_endpoint))
    wait_for_training(lambda: study_of(mysql_db), 1)
    new_password = "rotated/" + services.HARD_PASSWORD
    put_password(secret, mysql_db, new_password)  # what a rotation function's last step leaves
    rotate_password(mysql_db, new_password)
    rc, out, err = job.finish(timeout=300)
    assert rc == 0, err[-3000:]
    assert "its new password is in use (rotated)" in err
    assert new_password not in out + err and services.HARD_PASSWORD not in out + err
    trials = study_of(mysql_db).trials
    assert len([t for t in trials if t.state in FINISHED]) == 4
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.mark.process
def test_sigterm_while_a_stalled_database_is_being_joined_ends_the_job_at_once(
    private_mariadb, private_db, moto_endpoint, aws, job_dir
):
    hps = {
        "host": "127.0.0.1",
        "db-port": str(private_db.port),
        "db-name": private_db.name,
        "db-secret": aws(private_db.credentials()),
        "region-name": services.REGION,
        "study-name": "shared",
        "db-retry-timeout": "300",
    }
    base = job_dir(hps)
    with private_mariadb.stalled():
        job = Followed(start_job(base, "joining", moto_endpoint))
        job.wait_for_stderr("The database has not answered for", 120)
        t0 = time.monotonic()
        os.killpg(job.proc.pid, signal.SIGTERM)
        rc, _, err = job.finish(timeout=120)
        took = time.monotonic() - t0
    print(f"stopped {took:.1f} s after SIGTERM while joining a stalled database")
    assert took < 60, err[-3000:]
    assert rc == 1  # no study was joined: nothing ran, and the line says why
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith(f"Cannot open the study on mysql+mysqlconnector://{private_db.user}@"), failure
    assert "unreachable when the job was stopped (SIGTERM)" in failure
