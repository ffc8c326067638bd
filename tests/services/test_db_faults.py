"""Faults of a real network and a real account, in process: a database server that stops answering
(SIGSTOP on a private MariaDB of the test's own), SIGTERM during such a stall, and a secret
rotated (moto's Secrets Manager plus ALTER USER, and the connections killed)."""

import os
import signal
import socket
import threading
import time

import mysql.connector
import psycopg2
import pytest
import sqlalchemy

from core.errors import UserError
from entrypoint.study import join
from entrypoint.trials import search
from hpo_study import settings
from hpo_study.database import dberrors, locate
from tests.support import services
from tests.support.cli import run_cli
from tests.support.secrets import put_password, rotate_password


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


def meet_a_stall(engine: sqlalchemy.Engine, stalled) -> tuple[float, float, BaseException]:
    """A query, then a new connect, on a server stalled by ``stalled()``: both fail as errors
    the retry policy waits for, the query's as a stall whose connection the pool drops; the
    pool answers again once the server does. Returns the query's and the connect's seconds,
    and the connect's error."""
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
        with stalled():
            t0 = time.monotonic()
            with pytest.raises(sqlalchemy.exc.DBAPIError) as info, engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
            waited = time.monotonic() - t0
            assert dberrors.is_transient(info.value) and dberrors.is_stall(info.value)
            assert info.value.connection_invalidated  # not handed out again
            assert "no answer from the database server in time" in dberrors.describe(info.value)
            t1 = time.monotonic()  # a new connection: the server's handshake never comes
            with pytest.raises(sqlalchemy.exc.DBAPIError) as connecting, engine.connect():
                pass
            connect_s = time.monotonic() - t1
            assert dberrors.is_transient(connecting.value)
        print(f"stalled read failed after {waited:.1f} s, stalled connect after {connect_s:.1f} s")
        with engine.connect() as conn:  # the server answers again: so does the pool
            assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
    return waited, connect_s, connecting.value


@pytest.mark.services
def test_a_stalled_server_fails_a_call_within_the_time_outs_as_a_transient_error(
    private_mariadb, private_db, aws
):
    """The driver's socket has a read time-out after the handshake (3024 when it ends)."""
    db = locate.resolve(stall_settings(private_db, aws(private_db.credentials()), 5), "/nonexistent")
    waited, connect_s, _ = meet_a_stall(db.create_engine(pool_size=1), private_mariadb.stalled)
    assert locate.IO_TIMEOUT_S - 1 <= waited < locate.IO_TIMEOUT_S + 10
    assert connect_s < locate.CONNECT_TIMEOUT_S + 10


@pytest.mark.services
def test_a_stalled_postgresql_server_fails_a_call_within_the_time_outs_as_a_transient_error(
    private_postgres,
):
    """libpq has no read time-out: psycopg2's wait callback (hpo_study/database/pgwait.py)
    bounds each wait for an answer, and the connect by its connect_timeout."""
    db = locate.resolve(settings.parse({"storage": private_postgres.url}), "/nonexistent")
    waited, connect_s, connecting = meet_a_stall(
        db.create_engine(io_timeout_s=3, pool_size=1), private_postgres.stalled
    )
    assert 2 <= waited < 3 + 10
    assert dberrors.is_stall(connecting)
    assert locate.CONNECT_TIMEOUT_S - 1 <= connect_s < locate.CONNECT_TIMEOUT_S + 10


@pytest.mark.services
def test_a_postgresql_connect_goes_on_to_the_next_host_when_one_refuses(private_postgres):
    """A storage URL may list several hosts: libpq tries the next one when a host refuses,
    also under the bounded wait (each host's socket gets its own connect_timeout). A first host
    that accepts and then never answers ends the whole connect at connect_timeout instead
    (libpq's non-blocking connect cannot be told to move on: docs/many-jobs.md)."""
    from hpo_study.database import pgwait

    def connect(first_port: int):  # the first host, then the private server
        return psycopg2.connect(
            host="127.0.0.1,127.0.0.1",
            port=f"{first_port},{private_postgres.port}",
            user=private_postgres.USER,
            dbname="postgres",
            connect_timeout=2,
            sslmode="disable",
            connection_factory=pgwait.connection_factory(15),
        )

    t0 = time.monotonic()
    conn = connect(services.free_port())  # nobody listens there: refused
    waited = time.monotonic() - t0
    try:
        assert conn.info.port == private_postgres.port and waited < 2
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()
    with socket.create_server(("127.0.0.1", 0)) as silent:
        t0 = time.monotonic()
        with pytest.raises(pgwait.Stalled):
            connect(silent.getsockname()[1])
        assert 2 <= time.monotonic() - t0 < 4


@pytest.mark.services
def test_a_plain_psycopg2_connect_keeps_its_connect_timeout_under_the_callback():
    """The callback is process-wide: a connection made without our class (a test helper, a
    benchmark) still ends its connect at connect_timeout, at a server that never answers (a
    socket that listens and never replies)."""
    from hpo_study.database import pgwait

    pgwait.connection_factory(15)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        t0 = time.monotonic()
        with pytest.raises(pgwait.Stalled):
            psycopg2.connect(
                host="127.0.0.1", port=silent.getsockname()[1], connect_timeout=2, sslmode="disable"
            )
        assert 2 <= time.monotonic() - t0 < 4


@pytest.mark.services
def test_the_launcher_s_probe_calls_a_stalled_postgresql_server_unreachable(private_postgres):
    """`status` without --source asks the database first: a stopped server is no answer within
    the probe's connect time-out (not a hang, nor a server that answered)."""
    from launcher import source

    study = settings.parse({"storage": private_postgres.url})
    assert source._probe(study, session=None) is None  # it answers
    with private_postgres.stalled():
        t0 = time.monotonic()
        why = source._probe(study, session=None)
        waited = time.monotonic() - t0
    assert why is not None and "does not answer from here" in why and "stopped answering" in why
    assert source.PROBE_CONNECT_S - 1 <= waited < source.PROBE_CONNECT_S + 5


@pytest.mark.services
def test_the_schema_lock_neither_outwaits_a_stall_nor_sigterm(private_mariadb, private_db, aws):
    """The first jobs create the schema under a named lock on a connection of its own. A server
    that stalls while the lock is held costs one read time-out (not the lock's 120 s wait plus
    one), and a job waiting for another's lock stops between polls when it gets SIGTERM."""
    db = locate.resolve(stall_settings(private_db, aws(private_db.credentials()), 5), "/nonexistent")
    try:
        with join.schema_lock(db):
            os.kill(private_mariadb.proc.pid, signal.SIGSTOP)  # a stall while the schema is made
            t0 = time.monotonic()
        released_s = time.monotonic() - t0  # the release meets the stall: the connection is dropped
    finally:
        os.kill(private_mariadb.proc.pid, signal.SIGCONT)
    print(f"leaving the schema lock on a stalled server took {released_s:.1f} s")
    assert released_s < locate.IO_TIMEOUT_S + join.LOCK_POLL_S + 10

    name = f"optuna-schema-{private_db.name}"
    other = mysql.connector.connect(
        user=private_db.user, password=private_db.password, host=private_db.host, port=private_db.port
    )
    try:
        other.cursor().execute("SELECT GET_LOCK(%s, 0)", (name,))
        stop = threading.Event()
        stop.set()  # SIGTERM came while this job waits for the other job's lock
        with pytest.raises(TimeoutError, match="not granted before the job was stopped"):
            with join.schema_lock(db, stop):
                pass
    finally:
        other.close()
    with join.schema_lock(db):  # the holder's connection closed: the lock is free again
        pass


# --- a rotated secret -------------------------------------------------------------------------


@pytest.mark.services
def test_a_password_being_rotated_is_found_in_the_pending_version(aws, mysql_db):
    """AWS's rotation functions set the new password in the database before they make it
    AWSCURRENT: a connection made in between finds it as AWSPENDING."""
    secret = aws(mysql_db.credentials())
    db = locate.resolve(stall_settings(mysql_db, secret, 5), "/nonexistent")
    new_password = "pending/" + services.HARD_PASSWORD
    put_password(secret, mysql_db, new_password, stage="AWSPENDING")
    rotate_password(mysql_db, new_password)
    engine = db.create_engine(poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT CURRENT_USER()")).scalar().startswith(mysql_db.user)
    finally:
        engine.dispose()
    assert db.password == new_password


@pytest.mark.services
def test_a_rotated_postgresql_password_is_found_by_reading_the_secret_again(
    aws, private_postgres, monkeypatch
):
    """PostgreSQL gives a refused login no code, so a failed connect reads the secret again (at
    most every 30 s): after a rotation, new connections use the new password."""
    pg = private_postgres.new_role_database()
    secret = aws(pg.secret_document(engine="postgres"))
    study = settings.parse({"db-secret": secret, "region-name": services.REGION, "db-retry-timeout": "5"})
    db = locate.resolve(study, "/nonexistent")
    assert db.kind == "postgresql"
    reads = []
    read = db.secret._read
    monkeypatch.setattr(db.secret, "_read", lambda stage: reads.append(stage) or read(stage))
    engine = db.create_engine(poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT current_user")).scalar() == pg.user
        new_password = "rotated/" + services.HARD_PASSWORD
        private_postgres.rotate_password(pg, new_password)
        put_password(secret, pg, new_password)
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT current_user")).scalar() == pg.user
        assert db.password == new_password and reads == [None]
        # Rotated again, the secret not yet: the first failed connect reads it (the last connect
        # succeeded), the next ones within UNSURE_REREAD_S do not.
        private_postgres.rotate_password(pg, "third/" + services.HARD_PASSWORD)
        for _ in range(3):
            with pytest.raises(sqlalchemy.exc.OperationalError) as info, engine.connect():
                pass
        assert dberrors.is_transient(info.value) and "password authentication failed" in str(info.value)
        assert services.HARD_PASSWORD not in str(info.value)
        assert reads == [None, None, "AWSPENDING"]
    finally:
        engine.dispose()


@pytest.mark.services
def test_a_password_refused_also_after_reading_the_secret_again_is_one_clear_line(aws, mysql_db):
    secret = aws({**mysql_db.credentials(), "password": "wrong"})
    s = stall_settings(mysql_db, secret, 300)
    t0 = time.monotonic()
    with pytest.raises(UserError) as info:
        db = locate.resolve(s, "/nonexistent")
        join.join_study(s, db, search.make_sampler(s, 0), search.make_pruner(s))
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
    put_password(secret, mysql_db, new_password, stage="AWSPENDING")  # mid-rotation
    rotate_password(mysql_db, new_password)
    result = run_cli(
        "status", "--study", "launched", "--db-secret", secret, "--region", services.REGION, "--json"
    )
    assert result.code == 0, result.err
    assert result.json()["best"]["value"] == 0.5
    assert new_password not in result.out + result.err
