"""Settings -> where the study lives: a storage URL, a Secrets Manager secret, or the embedded
SQLite file; the engine's connect arguments (bounded connects and round trips, verified TLS),
and the secret's password that follows its rotation. Used by the job (entrypoint/study/join.py
opens the study on it) and by the launcher (which reads the study from the laptop).

Connections per job: at most two, a pool of ``POOL_SIZE`` plus ``MAX_OVERFLOW``: one for the
main thread, one for the heartbeat thread (no call of a thread holds two at once). While the
first jobs create the schema, the lock's connection and one of the pool's. Keep ``jobs x 2``
under the server's ``max_connections`` (benchmarks/trial_overhead.py counts them, 64 jobs).
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy.engine import URL, make_url

from core.engines import DEFAULT_ENGINE, ENGINES, Engine
from core.engines import names as engine_names
from core.errors import UserError
from hpo_study.constants import EMBEDDED_STORAGE_FILE
from hpo_study.database import credentials, region, tls
from hpo_study.database.dberrors import describe, is_auth_failure, is_stall, may_be_refused_login
from hpo_study.database.redact import MASK, keep_out
from hpo_study.settings import Settings

POOL_SIZE = 1
MAX_OVERFLOW = 1
CONNECT_TIMEOUT_S = 10
# No round trip waits longer for a server that stopped answering; then the call fails as a lost
# connection and is retried like one, within db-retry-timeout. Longer than any query of a job
# (the slowest, reading a large study, takes well under a second on a live server).
IO_TIMEOUT_S = 15
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
            args.update(io_connect_args(ENGINES[self.kind], io_timeout_s))
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
    """Connect with the secret's password; after a refusal, once with each newer one it has.

    On PostgreSQL a refusal has no code (any failed connect may be one): the secret is read
    again at most once per credentials.UNSURE_REREAD_S then (LivePassword's ``unsure``), and a
    failed connect with an unchanged secret stays the error it was (an outage, retried).
    """
    refused = cparams["password"] = secret.value
    try:
        connection = _driver_connect(dialect, cargs, cparams)
        secret.connected()
        return connection
    except dialect.loaded_dbapi.Error as exc:
        unsure = not is_auth_failure(exc)
        if unsure and not may_be_refused_login(exc):
            raise
        error = exc
    for password in secret.candidates(refused, unsure=unsure):
        cparams["password"] = password
        try:
            connection = _driver_connect(dialect, cargs, cparams)
        except dialect.loaded_dbapi.Error as exc:
            if not (is_auth_failure(exc) or may_be_refused_login(exc)):
                raise
            continue
        secret.accept(password)
        secret.connected()
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


def io_connect_args(engine: Engine, seconds: int) -> dict[str, Any]:
    """The driver's arguments after which no round trip waits much longer than ``seconds``
    for a server that stopped answering (with psycopg2, a connection class of pgwait's)."""
    args = engine.io_connect_args(seconds)
    if engine.waits_bounded_by_callback:
        from hpo_study.database import pgwait  # imports psycopg2: only for an engine that needs it

        args["connection_factory"] = pgwait.connection_factory(seconds)
    return args


def _connect_args(engine: Engine, ca_path: str | None) -> dict[str, Any]:
    """The driver's arguments: a bounded connect and round trips, and verified TLS when a CA
    bundle is given."""
    args = {**engine.timeout_connect_args(CONNECT_TIMEOUT_S), **io_connect_args(engine, IO_TIMEOUT_S)}
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


def refused(db: Database, exc: BaseException) -> UserError:
    """The one line for a database that refused the credentials (``exc``: its error)."""
    again = f" of secret '{db.secret.secret_id}', also after reading the secret again," if db.secret else ""
    return UserError(f"The database at {db.shown} refused the credentials{again}: {describe(exc)}")
