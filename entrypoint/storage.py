"""Settings -> an Optuna RDB storage and the study this job joins, safe for many parallel jobs.

Plain Optuna races when several processes open an empty database at once (``CREATE TABLE``
collisions, a duplicated schema-version row). Until the schema is complete, jobs create it
one at a time behind a database-level lock (``GET_LOCK`` on MySQL, an advisory lock on
PostgreSQL: each engine's record in core/engines.py); the lock dies with its connection, so a
killed job blocks no one. Once the schema is there, jobs skip the lock and the DDL altogether.

Connections per job: at most two, a pool of ``POOL_SIZE`` plus ``MAX_OVERFLOW``: one for the
main thread, one for the heartbeat thread (no call of a thread holds two at once). While the
first jobs create the schema, the lock's connection and one of the pool's. Keep ``jobs x 2``
under the server's ``max_connections`` (benchmarks/trial_overhead.py counts them, 64 jobs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import URL, make_url

from core.engines import DEFAULT_ENGINE, ENGINES, Engine
from core.engines import names as engine_names
from core.errors import UserError
from entrypoint import credentials, optuna_private, region, tls
from entrypoint.constants import EMBEDDED_STORAGE_FILE
from entrypoint.dberrors import Retrier, describe, is_auth_failure, is_stall, is_transient, not_timed
from entrypoint.redact import MASK, keep_out
from entrypoint.settings import Settings

logger = logging.getLogger(__name__)
# What a storage call raises once its retries are spent (then: a one-line UserError or a warning).
_DB_ERRORS = (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError)

POOL_SIZE = 1
MAX_OVERFLOW = 1
CONNECT_TIMEOUT_S = 10
# No round trip waits longer for a server that stopped answering; then the call fails as a lost
# connection and is retried like one, within db-retry-timeout. Longer than any query of a job
# (the slowest, reading a large study, takes well under a second on a live server).
IO_TIMEOUT_S = 15
LOCK_TIMEOUT_S = 120
# The schema lock is asked for in waits of this length, so that no round trip on its connection
# waits longer than IO_TIMEOUT_S + LOCK_POLL_S for a stalled server and SIGTERM is seen between
# them (one GET_LOCK of LOCK_TIMEOUT_S would hold the connection's time-out at 135 s).
LOCK_POLL_S = 5
STALE_TRIAL_MAX_RETRY = 3  # a trial whose job died is re-run at most this many times
DEFAULT_DB_NAME = "optuna"
PASSWORD_KEYS = ("password", "passwd", "pwd")  # query keys that carry a password, in any case


@dataclasses.dataclass(frozen=True)
class Database:
    """Where the study lives. The password, if any, is only in ``connect_args``."""

    url: URL
    connect_args: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    # The password of a db-secret, which follows the secret's rotation (see bind()).
    secret: credentials.LivePassword | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def kind(self) -> str:
        return self.url.get_backend_name()

    @property
    def password(self) -> str | None:
        """The password in use now (the secret's newest, once a rotation was met)."""
        return self.secret.value if self.secret is not None else self.connect_args.get("password")

    @property
    def driver_args(self) -> dict[str, Any]:
        """The driver's connect arguments, with the password in use now."""
        if self.secret is None:
            return dict(self.connect_args)
        return {**self.connect_args, "password": self.secret.value}

    @property
    def shown(self) -> str:
        """The URL for messages and logs: no password, every query value masked."""
        return shown(self.url)

    def engine_kwargs(self, pre_ping: bool = False) -> dict[str, Any]:
        """For a job (no pre-ping: see below) or, with ``pre_ping``, a client without retries."""
        if self.kind == "sqlite":
            return {}
        return {
            "pool_size": POOL_SIZE,
            "max_overflow": MAX_OVERFLOW,
            # No ping before every checkout (SQLAlchemy's pre-ping, Optuna's default on MySQL:
            # nine round trips per trial): every storage call of a job is retried when its
            # connection turns out dead, and the failed connection's pool is invalidated.
            "pool_pre_ping": pre_ping,
            "pool_recycle": 3600,
            "connect_args": self.driver_args,
        }

    def create_engine(self, io_timeout_s: int | None = None, **kwargs: Any) -> sqlalchemy.Engine:
        """A SQLAlchemy engine on this database, bound (see bind()); ``io_timeout_s`` replaces
        the bound on one round trip."""
        args = self.driver_args
        if io_timeout_s is not None and self.kind in ENGINES:
            args.update(ENGINES[self.kind].io_connect_args(io_timeout_s))
        return bind(sqlalchemy.create_engine(self.url, connect_args=args, **kwargs), self)


def bind(engine: sqlalchemy.Engine, db: Database) -> sqlalchemy.Engine:
    """Make ``engine`` meet a stalled server and a rotated secret as ``db`` should.

    A round trip that timed out (the server stopped answering) counts as a lost connection, so
    the pool drops it and its siblings (a stall takes them all) instead of handing them out
    again. With a db-secret, every new connection uses the secret's newest password, and one the
    database refuses sends the secret to be read again: the connection is tried once more with
    what changed (SQLAlchemy's ``do_connect`` hook, its documented way to supply credentials
    that change). Returns ``engine``.
    """
    sqlalchemy.event.listen(engine, "handle_error", _stall_is_a_disconnect)
    sqlalchemy.event.listen(engine, "do_connect", functools.partial(_connect, db.secret))
    return engine


def _stall_is_a_disconnect(context: sqlalchemy.engine.ExceptionContext) -> None:
    if is_stall(context.original_exception):
        context.is_disconnect = True


def _connect(
    secret: credentials.LivePassword | None, dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]
) -> Any:
    """SQLAlchemy's do_connect hook: the driver's connect, with the secret's password if any."""
    if secret is None:
        return _driver_connect(dialect, cargs, cparams)
    return _connect_with_secret(secret, dialect, cargs, cparams)


def _driver_connect(dialect: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
    """The driver's connect; a connect option it refuses before connecting (from the storage
    URL's query: ``?ssl_key=`` without ``ssl_cert``) is a UserError, not a traceback."""
    try:
        return dialect.loaded_dbapi.connect(*cargs, **cparams)
    except (AttributeError, TypeError, ValueError, KeyError) as exc:  # the driver's option checks
        raise UserError(
            f"The database driver refused the connect options ({type(exc).__name__}: {str(exc)[:200]}): "
            "check the query options of 'storage'"
        ) from None


def _connect_with_secret(
    secret: credentials.LivePassword, dialect: Any, cargs: Any, cparams: dict[str, Any]
) -> Any:
    """Connect with the secret's password; after a refusal, once with each newer one it has."""
    refused = cparams["password"] = secret.value
    try:
        return _driver_connect(dialect, cargs, cparams)
    except dialect.loaded_dbapi.Error as exc:
        if not is_auth_failure(exc):
            raise
        error = exc
    for password in secret.candidates(refused):
        cparams["password"] = password
        try:
            connection = _driver_connect(dialect, cargs, cparams)
        except dialect.loaded_dbapi.Error as exc:
            if not is_auth_failure(exc):
                raise
            continue
        secret.accept(password)
        return connection
    raise error


def shown(url: URL | str) -> str:
    """A URL as messages and logs show it: no password, and query values masked (a driver
    option such as ``ssl_key`` or a misplaced password may sit there)."""
    url = make_url(url)
    masked = url.set(query={key: MASK for key in url.query}) if url.query else url
    return masked.render_as_string(hide_password=True)


def _names_a_password(key: str) -> bool:
    key = key.lower()
    return any(word in key for word in PASSWORD_KEYS)


def embedded_url(output_data_dir: str | Path) -> URL:
    """A SQLite file in the output data folder, so the study ships in output.tar.gz."""
    path = Path(output_data_dir).resolve() / EMBEDDED_STORAGE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return URL.create("sqlite", database=str(path))


def copy_embedded(db: Database, output_data_dir: str | Path) -> None:
    """Copy an embedded study kept in the checkpoint folder into the output data folder."""
    source = Path(db.url.database)
    target = Path(output_data_dir) / EMBEDDED_STORAGE_FILE
    if source.resolve() != target.resolve() and source.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _connect_args(engine: Engine, ca_path: str | None) -> dict[str, Any]:
    """The driver's arguments: a bounded connect and round trips, and verified TLS when a CA
    bundle is given."""
    args = {**engine.timeout_connect_args(CONNECT_TIMEOUT_S), **engine.io_connect_args(IO_TIMEOUT_S)}
    if ca_path is None:
        return args
    if not Path(ca_path).is_file():
        raise UserError(f"Hyperparameter 'db-ssl-ca': no CA bundle at {ca_path}")
    return {**args, **engine.tls_connect_args(ca_path)}


def _from_storage_url(
    settings: Settings,
    creds: credentials.DbCredentials | None,
    read: Callable[[str | None], credentials.DbCredentials] | None,
) -> Database:
    try:
        url = make_url(settings.storage)
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:  # ValueError: a port that is no number
        problem = " (its port is not a number)" if isinstance(exc, ValueError) else ""
        raise UserError(
            f"Hyperparameter 'storage' is not a database URL (dialect+driver://user@host:port/db){problem}"
        ) from None
    if url.password is not None or any(_names_a_password(key) for key in url.query):
        raise UserError(
            "Hyperparameter 'storage' must not contain a password (hyperparameters are visible "
            "in the console): keep it in a secret named by 'db-secret'"
        )
    kind = url.get_backend_name()
    if kind == "sqlite":
        return Database(url)
    if kind not in ENGINES:
        raise UserError(f"Hyperparameter 'storage': unsupported database '{kind}' (use {engine_names()})")
    engine = ENGINES[kind]
    if url.get_driver_name() == engine.dialect_default_driver or "+" not in url.drivername:
        url = url.set(drivername=engine.driver)
    args = _connect_args(engine, tls.ca_bundle(settings.db_ssl_ca, settings.db_ssl_verify, url.host))
    if creds is not None:
        url = url.set(username=url.username or creds.username)
        args["password"] = creds.password
    return Database(url, args, _live(settings, creds, read))


def _live(
    settings: Settings,
    creds: credentials.DbCredentials | None,
    read: Callable[[str | None], credentials.DbCredentials] | None,
) -> credentials.LivePassword | None:
    """The secret's password, read again (with ``read``) when the database refuses it."""
    if creds is None or not settings.db_secret:
        return None
    secret_id, region_name = settings.db_secret, region.resolve(settings.region_name, settings.db_secret)
    if read is None:

        def read(stage: str | None) -> credentials.DbCredentials:
            return credentials.fetch(secret_id, region_name, stage=stage)

    return credentials.LivePassword(secret_id, creds.password, read, on_new=keep_out)


def resolve(
    settings: Settings,
    output_data_dir: str | Path,
    creds: credentials.DbCredentials | None = None,
    read: Callable[[str | None], credentials.DbCredentials] | None = None,
) -> Database:
    """Pick the database: a storage URL, a secret (plus overrides), or the embedded default.

    ``creds``: the secret's content when the caller already read it (the launcher reads it with
    the session of its --profile/--region); else it is read here with the default session.
    ``read``: how to read the secret again (a staging label, or None for the current version)
    when the database refuses its password; by default as it is read here.
    """
    if creds is None and settings.db_secret:
        creds = credentials.fetch(
            settings.db_secret, region.resolve(settings.region_name, settings.db_secret)
        )
    if settings.storage:
        return _from_storage_url(settings, creds, read)
    if creds is None:
        return Database(embedded_url(output_data_dir))
    engine = ENGINES[settings.db_engine or creds.engine or DEFAULT_ENGINE]
    host = settings.host or creds.host
    if not host:
        raise UserError(
            f"No database host: set the 'host' hyperparameter or 'host' in secret '{settings.db_secret}'"
        )
    url = URL.create(
        engine.driver,
        username=creds.username,
        host=host,
        port=settings.db_port or creds.port or engine.default_port,
        database=settings.db_name or creds.dbname or DEFAULT_DB_NAME,
    )
    ca = tls.ca_bundle(settings.db_ssl_ca, settings.db_ssl_verify, host)
    args = {"password": creds.password, **_connect_args(engine, ca)}
    return Database(url, args, _live(settings, creds, read))


@contextlib.contextmanager
def schema_lock(db: Database, stop: threading.Event | None = None) -> Iterator[None]:
    """Hold a database-wide named lock (no-op for SQLite, whose writes are serialised anyway).

    An engine whose lock reports its grant (MySQL's GET_LOCK) is asked in waits of LOCK_POLL_S
    until LOCK_TIMEOUT_S, giving up early when ``stop`` is set (SIGTERM).
    """
    if db.kind == "sqlite":
        yield
        return
    name = f"optuna-schema-{db.url.database}"[:64]
    lock = ENGINES[db.kind].lock
    key = {"key": lock.key(name)}
    acquire = sqlalchemy.text(lock.acquire)
    if lock.reports_grant:
        acquire = acquire.bindparams(timeout=min(LOCK_POLL_S, LOCK_TIMEOUT_S))
    stop = stop or threading.Event()
    # The lock's wait is no stall: its round trip may take one poll.
    engine = db.create_engine(io_timeout_s=IO_TIMEOUT_S + LOCK_POLL_S, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            with not_timed():  # waiting for another job's lock is no stall
                granted = conn.execute(acquire, key).scalar()
                while lock.reports_grant and granted != 1:
                    if stop.is_set():
                        raise TimeoutError(
                            f"schema lock {name} not granted before the job was stopped (SIGTERM)"
                        )
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"schema lock {name} not granted within {LOCK_TIMEOUT_S} s")
                    granted = conn.execute(acquire, key).scalar()
            released = False
            try:
                yield
                with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
                    conn.execute(sqlalchemy.text(lock.release), key)
                    released = True
            finally:
                if not released:  # an error, maybe a stall: closing the connection frees the lock
                    conn.invalidate()  # (and skips the rollback, another wait on a stalled server)
    finally:
        engine.dispose()


def schema_ready(db: Database) -> bool:
    """True once Optuna's schema is complete."""
    engine = db.create_engine(poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            return optuna_private.schema_complete(conn)
    finally:
        engine.dispose()


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

    def lapsed_trial_ids(self, study_id: int, after_s: float) -> list[int]:
        """RUNNING trials without a heartbeat for ``after_s`` (by the database's clock, like
        Optuna's sweep), or without any."""
        with optuna_private.engine(self).connect() as conn:
            now = conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar().replace(tzinfo=None)
            rows = optuna_private.running_heartbeats(conn, study_id)
        return [
            tid
            for tid, beat in rows
            if beat is None or (now - beat.replace(tzinfo=None)).total_seconds() > after_s
        ]

    def more_stale_trial_ids(self, study_id: int, stale: list[int]) -> list[int]:
        """RUNNING trials seen without any heartbeat for longer than interval + grace period."""
        with optuna_private.engine(self).connect() as conn:
            silent = [tid for tid, beat in optuna_private.running_heartbeats(conn, study_id) if beat is None]
        now = self.clock()
        self._silent_since = {tid: self._silent_since.get(tid, now) for tid in silent}
        return [tid for tid, since in self._silent_since.items() if now - since > self._silent_limit_s]


def _open(db: Database, settings: Settings, create_schema: bool) -> optuna.storages.RDBStorage:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, message=".*heartbeat")
    try:
        rdb = HeartbeatStorage(
            db.url.render_as_string(hide_password=False),  # holds no password: it is in connect_args
            engine_kwargs=db.engine_kwargs(),
            skip_table_creation=not create_schema,
            heartbeat_interval=settings.heartbeat_interval,
            grace_period=settings.heartbeat_grace_period,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=STALE_TRIAL_MAX_RETRY),
        )
        bind(optuna_private.engine(rdb), db)
        return rdb
    except RuntimeError as exc:  # Optuna's check of the schema's version, the only one it raises
        raise UserError(
            f"The study database at {db.shown} is not usable by Optuna {optuna.__version__}: {exc}"
        ) from None


def refused(db: Database, exc: BaseException) -> UserError:
    """The one line for a database that refused the credentials (``exc``: its error)."""
    again = f" of secret '{db.secret.secret_id}', also after reading the secret again," if db.secret else ""
    return UserError(f"The database at {db.shown} refused the credentials{again}: {describe(exc)}")


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's sweep: fail the RUNNING trials of dead jobs and re-queue their parameters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def join_study(
    settings: Settings,
    db: Database,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    stop: threading.Event | None = None,
    retry: Retrier | None = None,
    first_params: Mapping[str, Any] | None = None,
) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    """Create the schema and the study, or join them, under the schema lock; retry transient errors.

    Joining fails the trials of jobs that died (their heartbeats lapsed), which re-queues them.
    The job that creates the study (one, whatever the race) queues ``first_params`` as the
    study's first trial.

    Returns the study and its RDB storage (for heartbeats).
    """

    def attempt() -> tuple[optuna.Study, optuna.storages.RDBStorage]:
        if schema_ready(db):  # the common case: no lock, no DDL
            storage = _open(db, settings, create_schema=False)
        else:
            with schema_lock(db, stop):  # the first jobs on an empty database: one at a time
                storage = _open(db, settings, create_schema=not schema_ready(db))
        nonlocal created
        # Creating the study is one INSERT of a unique name; a job that loses the race loads it.
        try:
            study = optuna.create_study(
                storage=storage,
                study_name=settings.study_name,
                direction=settings.direction,
                sampler=sampler,
                pruner=pruner,
            )
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(
                study_name=settings.study_name, storage=storage, sampler=sampler, pruner=pruner
            )
        else:
            created = True  # survives a retry of this attempt, which then finds the study
        return study, storage

    created = False

    retry = retry or Retrier(settings.db_retry_timeout, stop)
    try:
        study, rdb = retry(attempt, "opening the study")
    except _DB_ERRORS as exc:
        if is_auth_failure(exc):
            raise refused(db, exc) from None
        raise UserError(f"Cannot open the study on {db.shown}: {_gave_up(exc, settings, retry)}") from None
    except TimeoutError as exc:  # the schema lock
        stuck = "; another job is creating the schema and may be stuck (see its log), or the database is very slow"
        raise UserError(
            f"Cannot open the study on {db.shown}: {exc}{'' if retry.stop.is_set() else stuck}"
        ) from None
    if len(study.directions) != 1:
        raise UserError(
            f"Study '{settings.study_name}' is multi-objective ({len(study.directions)} objectives); "
            "this image optimises one objective: use another study-name"
        )
    if study.direction.name.lower() != settings.direction:
        raise UserError(
            f"Study '{settings.study_name}' exists with direction {study.direction.name.lower()}, "
            f"but this job asks for {settings.direction}: use another study-name"
        )
    if created and first_params:
        _enqueue_first(study, first_params, retry)
    try:
        retry(lambda: fail_stale_trials(study), "failing stale trials")
    except _DB_ERRORS as exc:
        raise UserError(f"Cannot open the study on {db.shown}: {_gave_up(exc, settings, retry)}") from None
    return study, rdb


def _gave_up(exc: BaseException, settings: Settings, retry: Retrier) -> str:
    """Why a call failed, saying when it was retried for db-retry-timeout first, or cut short
    by SIGTERM."""
    if is_transient(exc) and retry.stop.is_set():
        return f"unreachable when the job was stopped (SIGTERM): {describe(exc)}"
    if is_transient(exc):
        return (
            f"unreachable for longer than db-retry-timeout ({settings.db_retry_timeout:g} s): {describe(exc)}"
        )
    return describe(exc)


def _enqueue_first(study: optuna.Study, params: Mapping[str, Any], retry: Retrier) -> None:
    """Queue the creator's first trial; its own retried step, so a retry of the creation does not
    lose it, and skip_if_exists so a retried commit does not queue it twice. Losing it is not
    worth failing the job for: the sampler then starts the study."""
    try:
        retry(lambda: study.enqueue_trial(dict(params), skip_if_exists=True), "queueing the baseline trial")
    except (*_DB_ERRORS, TimeoutError) as exc:
        logger.warning("Study '%s': baseline trial not queued: %s", study.study_name, describe(exc))
        return
    logger.info("Study '%s' created; its first trial is the baseline configuration", study.study_name)
