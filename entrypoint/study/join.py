"""Settings + a located database -> the study this job joins, safe for many parallel jobs.

Plain Optuna races when several processes open an empty database at once (``CREATE TABLE``
collisions, a duplicated schema-version row). Until the schema is complete, jobs create it
one at a time behind a database-level lock (``GET_LOCK`` on MySQL, an advisory lock on
PostgreSQL: each engine's record in core/engines.py); the lock dies with its connection, so a
killed job blocks no one. Once the schema is there, jobs skip the lock and the DDL altogether.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RetryHeartbeatStaleTrialCallback

from core.engines import ENGINES
from core.errors import UserError
from entrypoint.study.heartbeat import HeartbeatStorage
from hpo_study import optuna_private
from hpo_study.database.dberrors import Retrier, describe, is_auth_failure, is_transient, not_timed
from hpo_study.database.locate import IO_TIMEOUT_S, Database, bind, refused
from hpo_study.settings import Settings

logger = logging.getLogger(__name__)
# What a storage call raises once its retries are spent (then: a one-line UserError or a warning).
_DB_ERRORS = (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError)

LOCK_TIMEOUT_S = 120
# The schema lock is asked for in waits of this length, so that no round trip on its connection
# waits longer than IO_TIMEOUT_S + LOCK_POLL_S for a stalled server and SIGTERM is seen between
# them (one GET_LOCK of LOCK_TIMEOUT_S would hold the connection's time-out at 135 s).
LOCK_POLL_S = 5
STALE_TRIAL_MAX_RETRY = 3  # a trial whose job died is re-run at most this many times


@contextlib.contextmanager
def schema_lock(db: Database, stop: threading.Event | None = None) -> Iterator[None]:
    """Hold a database-wide named lock (no-op for SQLite, whose writes are serialised anyway).

    An engine whose lock reports its grant (MySQL's GET_LOCK, waiting up to LOCK_POLL_S on the
    server; PostgreSQL's pg_try_advisory_lock, a quarter second) is asked again until
    LOCK_TIMEOUT_S, giving up early when ``stop`` is set (SIGTERM).
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
    # The lock's wait is no stall: its round trip may take one poll, or, where the lock blocks
    # until granted (an engine whose lock reports no grant), the whole LOCK_TIMEOUT_S.
    lock_wait_s = LOCK_POLL_S if lock.reports_grant else LOCK_TIMEOUT_S
    engine = db.create_engine(io_timeout_s=IO_TIMEOUT_S + lock_wait_s, poolclass=sqlalchemy.pool.NullPool)
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
