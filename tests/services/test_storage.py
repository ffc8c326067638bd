"""Shared storage against the machine's real MariaDB and PostgreSQL and a private TLS MariaDB."""

from __future__ import annotations

import concurrent.futures
import math
import threading
import time

import mysql.connector
import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from core.engines import ENGINES
from core.errors import UserError
from entrypoint.job.context import JobContext
from entrypoint.model.checkpoint import Progress
from entrypoint.study import join
from entrypoint.trials import builtin, search
from entrypoint.trials.runner import TrialRunner
from hpo_study import optuna_private, settings
from hpo_study import settings as settings_mod
from hpo_study.database import dberrors, locate
from tests.support import services


def open_study(s):
    db = locate.resolve(s, "/nonexistent-output")
    return db, join.join_study(s, db, search.make_sampler(s, 0), search.make_pruner(s))[0]


def secret_for(aws, db, **extra):
    return aws(db.credentials(**extra))


def run_one_trial(study):
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    study.tell(trial, 0.5)


@pytest.mark.services
def test_hard_password_from_secret_on_real_mariadb(aws, mysql_db):
    name = secret_for(aws, mysql_db)
    s = settings.parse(
        {"host": "127.0.0.1", "db-name": mysql_db.name, "db-secret": name, "region-name": "us-east-1"}
    )
    db, study = open_study(s)
    run_one_trial(study)
    assert len(study.trials) == 1
    assert services.HARD_PASSWORD not in repr(db) + str(db.url) + db.url.render_as_string(hide_password=False)
    assert db.url.port == 3306 and db.url.drivername == "mysql+mysqlconnector"


@pytest.mark.services
def test_rds_secret_fields_and_hyperparameter_overrides(aws, mysql_db):
    name = secret_for(aws, mysql_db, host="db.invalid", port=1, dbname="wrong", engine="aurora-mysql")
    s = settings.parse({"db-secret": name, "host": "127.0.0.1", "db-port": "3306", "db-name": mysql_db.name})
    db = locate.resolve(s, "/x")
    assert (db.url.host, db.url.port, db.url.database) == ("127.0.0.1", 3306, mysql_db.name)
    s2 = settings.parse(
        {"db-secret": secret_for(aws, mysql_db, host="127.0.0.1", port=3306, dbname=mysql_db.name)}
    )
    _, study = open_study(s2)  # everything from the secret
    run_one_trial(study)


@pytest.mark.services
def test_postgresql(aws, postgres_db):
    name = secret_for(
        aws, postgres_db, engine="postgres", host="127.0.0.1", port=5432, dbname=postgres_db.name
    )
    db, study = open_study(settings.parse({"db-secret": name}))
    assert db.kind == "postgresql"
    run_one_trial(study)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE


@pytest.mark.services
def test_storage_url_without_password_plus_secret(aws, mysql_db):
    name = secret_for(aws, mysql_db)
    url = f"mysql://127.0.0.1:3306/{mysql_db.name}"
    db, study = open_study(settings.parse({"storage": url, "db-secret": name}))
    assert db.url.username == mysql_db.user and db.url.drivername == "mysql+mysqlconnector"
    run_one_trial(study)


@pytest.mark.services
def test_wrong_password_is_a_clear_user_error(aws, mysql_db):
    name = aws({"username": mysql_db.user, "password": "wrong" + services.HARD_PASSWORD})
    s = settings.parse(
        {"host": "127.0.0.1", "db-name": mysql_db.name, "db-secret": name, "db-retry-timeout": "5"}
    )
    with pytest.raises(UserError) as info:
        open_study(s)
    assert "Access denied" in str(info.value) and services.HARD_PASSWORD not in str(info.value)


@pytest.mark.services
def test_existing_study_with_other_direction_is_refused(aws, mysql_db):
    name = secret_for(aws, mysql_db)
    base = {"host": "127.0.0.1", "db-name": mysql_db.name, "db-secret": name}
    open_study(settings.parse(base))
    with pytest.raises(UserError, match="exists with direction maximize, but this job asks for minimize"):
        open_study(settings.parse({**base, "objective-metric": "loss"}))


@pytest.mark.services
def test_transient_classification_uses_real_driver_errors(mysql_db):
    refused = sqlalchemy.create_engine(f"mysql+mysqlconnector://x@127.0.0.1:{services.free_port()}/x")
    with pytest.raises(sqlalchemy.exc.DBAPIError) as down:
        refused.connect()
    assert dberrors.is_transient(down.value)
    bad = sqlalchemy.create_engine(
        f"mysql+mysqlconnector://{mysql_db.user}@127.0.0.1/{mysql_db.name}", connect_args={"password": "nope"}
    )
    with pytest.raises(sqlalchemy.exc.DBAPIError) as denied:
        bad.connect()
    assert not dberrors.is_transient(denied.value)
    assert "Access denied" in dberrors.describe(denied.value)


@pytest.mark.services
def test_verified_tls_on_a_tls_only_user(aws, private_mariadb, private_db):
    root = services.mariadb_root(port=private_mariadb.port)
    root.cursor().execute(f"ALTER USER '{private_db.user}'@'%' REQUIRE SSL")
    name = secret_for(aws, private_db, host="127.0.0.1", port=private_mariadb.port, dbname=private_db.name)
    s = settings.parse({"db-secret": name, "db-ssl-ca": str(private_mariadb.tls["ca"])})
    db, study = open_study(s)
    run_one_trial(study)
    with study._storage._backend.engine.connect() as conn:  # the very engine the study uses
        cipher = conn.execute(sqlalchemy.text("SHOW SESSION STATUS LIKE 'Ssl_cipher'")).one()[1]
    assert cipher, "connection is not encrypted"
    # Verification is real: a CA that did not sign the server's certificate is rejected.
    other_ca = services.make_tls_files(private_mariadb.folder / "other-ca")["ca"]
    with pytest.raises(UserError, match="Cannot open the study"):
        open_study(settings.parse({"db-secret": name, "db-ssl-ca": str(other_ca), "db-retry-timeout": "2"}))


@pytest.mark.services
def test_mysql_lock_serialises_schema_creation(aws, mysql_db):
    """While one job holds the schema lock, another cannot take it."""
    db = locate.resolve(
        settings.parse(
            {"host": "127.0.0.1", "db-name": mysql_db.name, "db-secret": secret_for(aws, mysql_db)}
        ),
        "/x",
    )
    with join.schema_lock(db):
        other = mysql.connector.connect(host="127.0.0.1", user=mysql_db.user, password=mysql_db.password)
        cur = other.cursor()
        cur.execute("SELECT GET_LOCK(%s, 0)", (f"optuna-schema-{mysql_db.name}",))
        assert cur.fetchone()[0] == 0
        other.close()


@pytest.mark.services
def test_postgresql_lock_serialises_schema_creation(aws, postgres_db, monkeypatch):
    """The advisory lock from the engine table: while one job holds it, another cannot take it."""
    secret = secret_for(aws, postgres_db, engine="postgres", host="127.0.0.1", dbname=postgres_db.name)
    db = locate.resolve(settings.parse({"db-secret": secret}), "/x")
    key = ENGINES["postgresql"].lock.key(f"optuna-schema-{postgres_db.name}")
    other = sqlalchemy.create_engine(db.url, connect_args=db.connect_args, poolclass=sqlalchemy.pool.NullPool)
    try_lock = sqlalchemy.text("SELECT pg_try_advisory_lock(:k)")
    with join.schema_lock(db), other.connect() as conn:
        assert conn.execute(try_lock, {"k": key}).scalar() is False
    with other.connect() as conn:  # released with the block
        assert conn.execute(try_lock, {"k": key}).scalar() is True
        # Held by another job: this one asks again until it is free, and stops on SIGTERM.
        monkeypatch.setattr(join, "LOCK_TIMEOUT_S", 20)  # a failed unlock ends the wait soon
        unlock = sqlalchemy.text("SELECT pg_advisory_unlock(:k)")
        waited = threading.Thread(target=lambda: (time.sleep(1.0), conn.execute(unlock, {"k": key})))
        t0 = time.monotonic()
        waited.start()
        with join.schema_lock(db):
            granted_s = time.monotonic() - t0
        waited.join()
        assert 1.0 <= granted_s < 1.0 + 2.0  # asked again and again (a quarter second apart)
        assert conn.execute(try_lock, {"k": key}).scalar() is True
        stop = threading.Event()
        stop.set()
        with pytest.raises(TimeoutError, match="not granted before the job was stopped"):
            with join.schema_lock(db, stop):
                pass
    other.dispose()


@pytest.mark.services
@pytest.mark.parametrize("engine", ["mysql", "postgresql"])
def test_stale_sweep_fails_a_trial_that_never_beat(aws, engine, request):
    """A job that died before its trial's first heartbeat leaves a RUNNING trial without one."""
    target = request.getfixturevalue("mysql_db" if engine == "mysql" else "postgres_db")
    port = 3306 if engine == "mysql" else 5432
    name = secret_for(aws, target, engine=engine, host="127.0.0.1", port=port, dbname=target.name)
    s = settings.parse({"db-secret": name, "heartbeat-interval": "30", "heartbeat-grace-period": "60"})
    _, study = open_study(s)
    rdb = study._storage._backend  # the RDB storage behind Optuna's cache
    now = [1000.0]
    rdb.clock = lambda: now[0]  # this job's monotonic clock, moved by hand
    silent, beating = study.ask(), study.ask()
    for t in (silent, beating):
        t.suggest_float("x", 0, 1)
    join.fail_stale_trials(study)  # both seen without heartbeat
    rdb.record_heartbeat(beating._trial_id)
    now[0] += 89  # not yet past interval + grace
    join.fail_stale_trials(study)
    late = study.ask()  # first seen now
    join.fail_stale_trials(study)
    TS = optuna.trial.TrialState
    assert all(t.state == TS.RUNNING for t in study.get_trials())
    now[0] += 2  # 91 s after the first look
    join.fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials()}
    assert states[silent.number] == TS.FAIL
    assert states[beating.number] == states[late.number] == TS.RUNNING
    (rerun,) = study.get_trials(states=(TS.WAITING,))
    assert rerun.system_attrs["failed_trial"] == silent.number and rerun.params == silent.params


def mysql_settings(aws, db, **extra):
    return settings.parse(
        {"host": "127.0.0.1", "db-name": db.name, "db-secret": secret_for(aws, db), **extra}
    )


@pytest.mark.services
def test_a_schema_from_another_optuna_version_is_a_clear_error(aws, mysql_db):
    s = mysql_settings(aws, mysql_db)
    open_study(s)
    with sqlalchemy.create_engine(
        f"mysql+mysqlconnector://{mysql_db.user}@127.0.0.1/{mysql_db.name}",
        connect_args={"password": mysql_db.password},
    ).begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = 'v3.0.0.a'"))
    with pytest.raises(UserError, match=r"not usable by Optuna .*optuna storage upgrade"):
        open_study(s)


@pytest.mark.services
def test_a_multi_objective_study_of_that_name_is_refused(aws, mysql_db):
    s = mysql_settings(aws, mysql_db, **{"study-name": "two"})
    db = locate.resolve(s, "/x")
    rdb = optuna.storages.RDBStorage(
        db.url.render_as_string(hide_password=False), engine_kwargs={"connect_args": db.connect_args}
    )
    optuna.create_study(storage=rdb, study_name="two", directions=["maximize", "minimize"])
    with pytest.raises(UserError, match="'two' is multi-objective .2 objectives.* use another study-name"):
        open_study(s)


@pytest.mark.services
def test_a_schema_lock_held_too_long_is_a_clear_error(aws, mysql_db, monkeypatch):
    monkeypatch.setattr(join, "LOCK_TIMEOUT_S", 1)
    s = mysql_settings(aws, mysql_db)
    other = mysql.connector.connect(host="127.0.0.1", user=mysql_db.user, password=mysql_db.password)
    other.cursor().execute("SELECT GET_LOCK(%s, 0)", (f"optuna-schema-{mysql_db.name}",))
    try:
        with pytest.raises(UserError, match="schema lock .* not granted within 1 s; another job"):
            open_study(s)
    finally:
        other.close()


def join_with_baseline(s, db):
    sampler, pruner = search.make_sampler(s, 0), search.make_pruner(s)
    return join.join_study(s, db, sampler, pruner, first_params=builtin.BASELINE_PARAMS)[0]


@pytest.mark.services
def test_racing_jobs_on_an_empty_database_enqueue_one_baseline(aws, mysql_db):
    s = mysql_settings(aws, mysql_db)
    db = locate.resolve(s, "/nonexistent-output")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        studies = list(pool.map(lambda _: join_with_baseline(s, db), range(4)))
    assert len(studies[0].get_trials(states=(optuna.trial.TrialState.WAITING,))) == 1


@pytest.mark.services
def test_the_lean_trial_read_returns_optunas_trials_on_mariadb():
    """optuna_private.LeanReadStorage against Optuna's own read, on the jobs' database engine."""
    from tests.unit.hpo_study.test_optuna_private import check_lean_read

    with services.mysql_database() as db:
        check_lean_read(db.url, ("maximize",), {"connect_args": {"password": db.password}})


@pytest.mark.services
def test_driver_options_the_driver_refuses_are_one_line(mysql_db):
    from entrypoint.study import join
    from entrypoint.trials import search
    from hpo_study.database import locate

    s = settings_mod.parse({"storage": f"{mysql_db.url}?ssl_key=/nonexistent", "db-retry-timeout": "2"})
    db = locate.resolve(s, "/nonexistent")
    with pytest.raises(UserError, match="The database driver refused the connect options .*ssl_key"):
        join.join_study(s, db, search.make_sampler(s, 0), search.make_pruner(s))


@pytest.mark.services
def test_connections_closed_by_the_server_while_idle_are_replaced(
    private_mariadb, private_db, aws, guard, caplog
):
    """No pre-ping: a pooled connection that the server dropped (wait_timeout) fails once and the
    call is retried on a new one."""
    from entrypoint.study import join
    from entrypoint.trials import search
    from hpo_study.database import locate

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
        db = locate.resolve(s, "/nonexistent-output")
        study, rdb = join.join_study(s, db, search.make_sampler(s, 0), search.make_pruner(s))

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


@pytest.mark.services
def test_the_packed_read_keeps_every_double_and_reads_rows_when_an_array_is_cut_or_unsupported(monkeypatch):
    """On MySQL the lean read gets each trial's rows packed in JSON by the server: random doubles
    of the whole range (parameters, values, intermediate values, attributes) come back as the
    same floats as Optuna's row-by-row read; a trial's array cut by the server's limit sends
    the read back to rows, with equal trials."""
    import random
    import struct

    from optuna.distributions import FloatDistribution

    rng = random.Random(25)

    def double() -> float:
        while True:
            value = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
            if math.isfinite(value) and value != 0.0:  # the server keeps no -0.0
                return value

    special = [0.1 + 0.2, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1e22, 2.0**60, 3.0]
    wide = FloatDistribution(-1.7976931348623157e308, 1.7976931348623157e308)
    with services.mysql_database() as db:
        kwargs = {"engine_kwargs": {"connect_args": {"password": db.password}}}
        theirs = optuna.storages.RDBStorage(db.url, **kwargs)
        study = optuna.create_study(storage=theirs)
        values = special + [double() for _ in range(300)]
        study.add_trials(
            [
                optuna.trial.create_trial(
                    params={"x": value, "y": values[-i]},
                    distributions={"x": wide, "y": wide},
                    value=values[i - 1],
                    intermediate_values={0: value, 1: values[i - 2], 7: float(i)},
                    user_attrs={"a": value, "b": [values[-i], 'x"\\y\u00e9']},
                )
                for i, value in enumerate(values)
            ]
        )
        ours = optuna_private.LeanReadStorage(db.url, skip_table_creation=True, **kwargs)
        sid = optuna_private.study_id(study)
        expected = theirs._get_trials(sid, None, set(), -1)
        got = ours._get_trials(sid, None, set(), -1)
        assert [repr(t) for t in got] == [repr(t) for t in expected]
        assert [t.params["x"] for t in got] == values

        # A server whose limit cuts the arrays (MariaDB: group_concat_max_len, 1 MB by default).
        cut = optuna_private.LeanReadStorage(db.url, skip_table_creation=True, **kwargs)

        @sqlalchemy.event.listens_for(cut.engine, "connect")
        def small_limit(dbapi_connection, record):
            cursor = dbapi_connection.cursor()
            cursor.execute("SET SESSION group_concat_max_len = 64")
            cursor.close()

        cut.engine.dispose()  # the storage's start opened connections before the listener

        rows = []
        monkeypatch.setattr(cut, "_read_rows", lambda *a: rows.append(1) or type(cut)._read_rows(cut, *a))
        got = cut._get_trials(sid, None, set(), -1)
        assert rows == [1] and cut._packs  # this read by rows; the next ones packed again
        assert [repr(t) for t in got] == [repr(t) for t in expected]
        cut.engine.dispose()

        # A server without JSON_ARRAYAGG (MySQL before 5.7.22, MariaDB before 10.5): its error
        # 1305 (no such function) sends this read and every later one to rows.
        old = optuna_private.LeanReadStorage(db.url, skip_table_creation=True, **kwargs)
        trials_table = optuna_private.TRIALS

        def unknown_function(table, *columns):
            query = sqlalchemy.select(sqlalchemy.func.no_such_json_arrayagg(table.c.trial_id))
            return query.where(table.c.trial_id == trials_table.c.trial_id).scalar_subquery()

        monkeypatch.setattr(optuna_private, "_packed", unknown_function)
        rows.clear()
        monkeypatch.setattr(old, "_read_rows", lambda *a: rows.append(1) or type(old)._read_rows(old, *a))
        assert [repr(t) for t in old._get_trials(sid, None, set(), -1)] == [repr(t) for t in expected]
        assert rows == [1] and not old._packs
        assert [repr(t) for t in old._get_trials(sid, None, set(), -1)] == [repr(t) for t in expected]
        assert rows == [1, 1]  # not asked to pack again
        old.engine.dispose()
        theirs.engine.dispose()
        ours.engine.dispose()
