"""Faults of a real network and a real account: a database server that stops answering (SIGSTOP
on a private MariaDB of the test's own), SIGTERM during such a stall, and a secret rotated while
jobs run (moto's Secrets Manager plus ALTER USER, and the job's connections killed)."""

import contextlib
import json
import os
import signal
import threading
import time

import boto3
import mysql.connector
import pytest
import sqlalchemy
from optuna.trial import TrialState

from core.errors import UserError
from entrypoint import dberrors, search, settings, storage
from tests.support import services
from tests.support.cli import run_cli
from tests.support.jobs import FINISHED, Followed, job_on_private_db, start_job, study_of, wait_for_training

# What one stalled call may cost before it fails (a read time-out, then a new connection's
# handshake time-out), plus room for a loaded machine.
ONE_STALLED_CALL_S = storage.IO_TIMEOUT_S + storage.CONNECT_TIMEOUT_S


def stall_settings(db: services.MySqlDatabase, secret: str, retry_s: int) -> settings.Settings:
    return settings.parse(
        {
            "host": db.host,
            "db-port": str(db.port),
            "db-name": db.name,
            "db-secret": secret,
            "region-name": services.REGION,
            "db-retry-timeout": str(retry_s),
        }
    )


@pytest.mark.services
def test_a_stalled_server_fails_a_call_within_the_time_outs_as_a_transient_error(
    private_mariadb, private_db, aws
):
    """The driver's socket has a read time-out after the handshake: the call fails, the pool
    drops the connection, and the error is one the retry policy waits for."""
    db = storage.resolve(stall_settings(private_db, aws(private_db.credentials()), 5), "/nonexistent")
    engine = db.create_engine(pool_size=1)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
        with private_mariadb.stalled():
            t0 = time.monotonic()
            with pytest.raises(sqlalchemy.exc.DBAPIError) as info, engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
            waited = time.monotonic() - t0
            assert dberrors.is_transient(info.value) and dberrors.is_stall(info.value)
            assert info.value.connection_invalidated  # not handed out again
            assert "no answer from the database server in time" in dberrors.describe(info.value)
            # A new connection while the server is stalled: the handshake times out (3024).
            t1 = time.monotonic()
            with pytest.raises(sqlalchemy.exc.DBAPIError) as connecting, engine.connect():
                pass
            connect_s = time.monotonic() - t1
            assert dberrors.is_transient(connecting.value)
        print(f"stalled read failed after {waited:.1f} s, stalled connect after {connect_s:.1f} s")
        assert storage.IO_TIMEOUT_S - 1 <= waited < storage.IO_TIMEOUT_S + 10
        assert connect_s < storage.CONNECT_TIMEOUT_S + 10
        with engine.connect() as conn:  # the server answers again: so does the pool
            assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.services
def test_the_schema_lock_neither_outwaits_a_stall_nor_sigterm(private_mariadb, private_db, aws):
    """The first jobs create the schema under a named lock on a connection of its own. A server
    that stalls while the lock is held costs one read time-out (not the lock's 120 s wait plus
    one), and a job waiting for another's lock stops between polls when it gets SIGTERM."""
    db = storage.resolve(stall_settings(private_db, aws(private_db.credentials()), 5), "/nonexistent")
    try:
        with storage.schema_lock(db):
            os.kill(private_mariadb.proc.pid, signal.SIGSTOP)  # a stall while the schema is made
            t0 = time.monotonic()
        released_s = time.monotonic() - t0  # the release meets the stall: the connection is dropped
    finally:
        os.kill(private_mariadb.proc.pid, signal.SIGCONT)
    print(f"leaving the schema lock on a stalled server took {released_s:.1f} s")
    assert released_s < storage.IO_TIMEOUT_S + storage.LOCK_POLL_S + 10

    name = f"optuna-schema-{private_db.name}"
    other = mysql.connector.connect(
        user=private_db.user, password=private_db.password, host=private_db.host, port=private_db.port
    )
    try:
        other.cursor().execute("SELECT GET_LOCK(%s, 0)", (name,))
        stop = threading.Event()
        stop.set()  # SIGTERM came while this job waits for the other job's lock
        with pytest.raises(TimeoutError, match="not granted before the job was stopped"):
            with storage.schema_lock(db, stop):
                pass
    finally:
        other.close()
    with storage.schema_lock(db):  # the holder's connection closed: the lock is free again
        pass


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


@pytest.mark.process
def test_a_stall_longer_than_db_retry_timeout_fails_the_job_on_time(
    private_mariadb, private_db, moto_endpoint, aws, job_dir
):
    base, proc = job_on_private_db(private_db, aws, job_dir, moto_endpoint, "stuck", n_trials=50, retry_s=5)
    with private_mariadb.stalled():
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
def test_sigterm_during_a_stall_ends_the_job_well_within_120_s(
    private_mariadb, private_db, moto_endpoint, aws, job_dir
):
    base, proc = job_on_private_db(private_db, aws, job_dir, moto_endpoint, "spot", n_trials=50, retry_s=300)
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
    assert "Not written to the study: the end of trial" in err
    assert "Not written: the study summary" in err


# --- a rotated secret -------------------------------------------------------------------------


def _rotate(db: services.MySqlDatabase, new_password: str) -> None:
    """Change the user's password in the database and end every connection it has."""
    root = services.mariadb_root(port=db.port)
    try:
        cur = root.cursor()
        cur.execute(f"ALTER USER '{db.user}'@'%' IDENTIFIED BY %s", (new_password,))
        cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (db.user,))
        for (connection_id,) in cur.fetchall():
            with contextlib.suppress(mysql.connector.Error):  # it may have ended meanwhile
                cur.execute(f"KILL {int(connection_id)}")
    finally:
        root.close()
    db.password = new_password


def _put_password(secret: str, db: services.MySqlDatabase, password: str, stage: str | None = None) -> None:
    client = boto3.client("secretsmanager", region_name=services.REGION)
    body = json.dumps({**db.credentials(), "password": password})
    client.put_secret_value(
        SecretId=secret, SecretString=body, **({"VersionStages": [stage]} if stage else {})
    )


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
    _put_password(secret, mysql_db, new_password)  # what a rotation function's last step leaves
    _rotate(mysql_db, new_password)
    rc, out, err = job.finish(timeout=300)
    assert rc == 0, err[-3000:]
    assert "its new password is in use (rotated)" in err
    assert new_password not in out + err and services.HARD_PASSWORD not in out + err
    trials = study_of(mysql_db).trials
    assert len([t for t in trials if t.state in FINISHED]) == 4
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.mark.services
def test_a_password_being_rotated_is_found_in_the_pending_version(aws, mysql_db):
    """AWS's rotation functions set the new password in the database before they make it
    AWSCURRENT: a connection made in between finds it as AWSPENDING."""
    secret = aws(mysql_db.credentials())
    db = storage.resolve(stall_settings(mysql_db, secret, 5), "/nonexistent")
    new_password = "pending/" + services.HARD_PASSWORD
    _put_password(secret, mysql_db, new_password, stage="AWSPENDING")
    _rotate(mysql_db, new_password)
    engine = db.create_engine(poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT CURRENT_USER()")).scalar().startswith(mysql_db.user)
    finally:
        engine.dispose()
    assert db.password == new_password


@pytest.mark.services
def test_a_password_refused_also_after_reading_the_secret_again_is_one_clear_line(aws, mysql_db):
    secret = aws({**mysql_db.credentials(), "password": "wrong"})
    s = stall_settings(mysql_db, secret, 300)
    t0 = time.monotonic()
    with pytest.raises(UserError) as info:
        db = storage.resolve(s, "/nonexistent")
        storage.join_study(s, db, search.make_sampler(s, 0), search.make_pruner(s))
    assert time.monotonic() - t0 < 30  # no wait for db-retry-timeout: the secret was read again
    message = str(info.value)
    assert message.startswith(f"The database at mysql+mysqlconnector://{mysql_db.user}@")
    assert f"refused the credentials of secret '{secret}', also after reading the secret again" in message
    assert "Access denied" in message and "wrong" not in message.split("Access denied")[0]


@pytest.mark.services
def test_the_launcher_reads_a_rotated_secret_again(aws, mysql_db):
    secret = aws(mysql_db.secret_document())
    mysql_db.study_with_trials("launched", [("job-1", 0.5)])
    new_password = "rotated/" + services.HARD_PASSWORD
    _put_password(secret, mysql_db, new_password, stage="AWSPENDING")  # mid-rotation
    _rotate(mysql_db, new_password)
    result = run_cli(
        "status", "--study", "launched", "--db-secret", secret, "--region", services.REGION, "--json"
    )
    assert result.code == 0, result.err
    assert result.json()["best"]["value"] == 0.5
    assert new_password not in result.out + result.err


@pytest.mark.unit
def test_each_candidate_password_is_read_once_per_refusal():
    from entrypoint.credentials import DbCredentials, LivePassword

    reads = []
    versions = {None: "old", "AWSPENDING": "new"}

    def read(stage):
        reads.append(stage)
        return DbCredentials("u", versions[stage])

    live = LivePassword("s", "old", read)
    assert live.candidates("old") == ["new"] and reads == [None, "AWSPENDING"]
    live.accept("new")
    assert live.value == "new"
    assert live.candidates("old") == ["new"] and len(reads) == 2  # another thread's refusal: no read
    versions[None] = versions["AWSPENDING"] = "new"
    assert live.candidates("new") == [] and len(reads) == 4


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
