"""The database engines a shared study may live on: one record per engine, in one table.

Everything that differs between engines is here: the SQLAlchemy driver, the default port, the
names RDS writes in a secret's ``engine``, the driver's connect arguments (time-out, TLS), the
named lock that makes schema creation race-safe, and the driver's error codes worth retrying.
Settings, the launcher, and hpo_study/database/ (credentials, locate, dberrors) all read this table, so adding
an engine means adding a record here (and its driver to pyproject.toml).

Plain data: nothing here imports a database driver, SQLAlchemy or Optuna.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any


@dataclasses.dataclass(frozen=True)
class SchemaLock:
    """A lock held on its own connection while the first jobs create the schema.

    ``acquire`` and ``release`` bind ``:key`` (and ``acquire`` ``:timeout`` when the engine's lock
    waits a bounded time). The lock dies with its connection, so a killed job blocks no one.
    """

    acquire: str
    release: str
    numeric_key: bool  # the key is a signed 64-bit number (an advisory lock), not the name itself
    reports_grant: bool  # acquire returns 1 once granted (else it timed out); otherwise it blocks

    def key(self, name: str) -> str | int:
        """The lock's key for a lock name (a number derived from it when the engine needs one)."""
        if not self.numeric_key:
            return name
        return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@dataclasses.dataclass(frozen=True)
class Engine:
    """What storage needs to know about one database engine."""

    name: str  # as in the 'db-engine' hyperparameter and the URL's dialect
    driver: str  # SQLAlchemy's dialect+driver, for URLs we build
    dialect_default_driver: str  # SQLAlchemy's default driver of the dialect: replaced by ``driver``
    default_port: int
    secret_engines: tuple[str, ...]  # what RDS/Aurora write in a secret's "engine"
    connect_args: Mapping[str, Any]  # always given to the driver
    timeout_arg: str  # the driver's connect time-out argument (seconds)
    io_timeout_args: Mapping[str, Any]  # arguments bounding every round trip: see io_connect_args
    tls_ca_arg: str  # the driver's CA bundle argument
    tls_args: Mapping[str, Any]  # what turns on verified TLS, with the CA bundle
    lock: SchemaLock
    driver_module: str  # the DB-API module, imported only by code that meets its errors
    error_code_attr: str  # where the driver's exceptions carry the server's error code
    transient_codes: frozenset[int | str]  # error codes worth waiting for (never message text)
    codeless_operational_is_transient: bool  # an OperationalError without code: a lost link
    auth_codes: frozenset[int | str]  # the server refused the user name or password
    stall_codes: frozenset[int | str]  # a round trip timed out: the connection is closed
    # Codes that mean the above only on the driver's OperationalError: a driver that gives one
    # code to every error raised without one (mysql-connector: -1) must not make a typo transient.
    operational_only_codes: frozenset[int | str] = frozenset()
    # A refused login comes without a code (libpq's, through psycopg2): any failed connect
    # may be one, so with a db-secret it is read again, at most every 30 s (see locate.py).
    refused_login_has_no_code: bool = False
    # The driver has no read time-out of its own: its waits are bounded by a wait callback and
    # a connection class of ours (hpo_study/database/pgwait.py, for psycopg2).
    waits_bounded_by_callback: bool = False

    def io_connect_args(self, seconds: int) -> dict[str, Any]:
        """Connect arguments after which no round trip waits longer than about ``seconds`` for a
        server that stopped answering (its value ``"{s}"`` replaced by ``seconds``,
        ``"{ms}"`` by milliseconds)."""
        values = {"{s}": seconds, "{ms}": seconds * 1000}
        return {key: values.get(value, value) for key, value in self.io_timeout_args.items()}

    def timeout_connect_args(self, seconds: float) -> dict[str, Any]:
        """Connect arguments for a connection attempt bounded to ``seconds``."""
        return {**self.connect_args, self.timeout_arg: seconds}

    def tls_connect_args(self, ca_path: str) -> dict[str, Any]:
        """Connect arguments for TLS verified against the CA bundle at ``ca_path``."""
        return {self.tls_ca_arg: ca_path, **self.tls_args}


def _frozen(**values: Any) -> Mapping[str, Any]:
    return MappingProxyType(values)


MYSQL = Engine(
    name="mysql",
    driver="mysql+mysqlconnector",
    dialect_default_driver="mysqldb",
    default_port=3306,
    secret_engines=("mysql", "aurora", "aurora-mysql", "mariadb"),
    # use_pure: the image ships mysql-connector without its C extension (60 MB); the same driver
    # everywhere, so the tests on the host exercise what the image runs.
    connect_args=_frozen(use_pure=True),
    timeout_arg="connection_timeout",
    # The socket's time-out for each read and each write after the handshake (the handshake
    # itself is bounded by connection_timeout). Without them a server that stops answering
    # without closing the connection (a dropped packet path, a failover, a paused instance)
    # blocks a query for as long as it stays silent. The driver closes the connection and
    # raises ReadTimeoutError/WriteTimeoutError, errno 3024.
    io_timeout_args=_frozen(read_timeout="{s}", write_timeout="{s}"),
    tls_ca_arg="ssl_ca",
    tls_args=_frozen(ssl_verify_cert=True, ssl_verify_identity=True),
    lock=SchemaLock(
        acquire="SELECT GET_LOCK(:key, :timeout)",
        release="SELECT RELEASE_LOCK(:key)",
        numeric_key=False,
        reports_grant=True,
    ),
    driver_module="mysql.connector",
    error_code_attr="errno",
    # Connection refused/lost/gone away, server shutting down, too many connections, lock wait
    # timeout, deadlock, connection killed; 3024: a read, write or connect that timed out (the
    # driver's ReadTimeoutError, WriteTimeoutError and ConnectionTimeoutError; also the server's
    # max_execution_time, which jobs never set); 2002: a connect time-out on the driver's unix
    # socket path; 1290 and 1836: a server in read-only mode, the writer of an Aurora cluster
    # during a failover.
    transient_codes=frozenset(
        {-1, 2002, 2003, 2005, 2006, 2013, 2055, 1040, 1053, 1205, 1213, 1290, 1836, 1927, 3024, 4031}
    ),
    codeless_operational_is_transient=False,
    auth_codes=frozenset({1045}),  # Access denied for user (a wrong or rotated password)
    # -1: the driver's "MySQL Connection not available": it pings before every cursor, and when
    # the ping times out it closes the connection and raises this, code -1 (its other use of -1,
    # refusing a LOCAL INFILE link, never happens here). Both mean the connection is gone: the
    # pool must not roll it back.
    stall_codes=frozenset({3024, -1}),
    # -1 is also the code of every error the driver raises without one (an unknown charset or
    # auth_plugin, "Unread result found"): those are mistakes, not lost links.
    operational_only_codes=frozenset({-1}),
)

POSTGRESQL = Engine(
    name="postgresql",
    driver="postgresql+psycopg2",
    dialect_default_driver="psycopg2",
    default_port=5432,
    secret_engines=("postgres", "postgresql", "aurora-postgresql"),
    connect_args=_frozen(),
    timeout_arg="connect_timeout",
    # libpq has no read time-out: TCP keepalives end a connection whose network path died, and
    # tcp_user_timeout one whose sent data stays unacknowledged; a server that is alive at the
    # TCP level but does not answer (paused) is met by the wait callback (waits_bounded_by_callback).
    io_timeout_args=_frozen(
        keepalives=1,
        keepalives_idle="{s}",
        keepalives_interval=1,
        keepalives_count=3,
        tcp_user_timeout="{ms}",
    ),
    tls_ca_arg="sslrootcert",
    tls_args=_frozen(sslmode="verify-full"),
    # pg_advisory_lock waits until granted, past SIGTERM and a stall's bound: try, and when the
    # lock is taken wait a quarter of a second on the server, then the job asks again (between
    # asks it checks SIGTERM and its deadline, as with MySQL's GET_LOCK).
    lock=SchemaLock(
        acquire=(
            "SELECT CASE WHEN pg_try_advisory_lock(:key) THEN 1"
            " ELSE (SELECT 0 FROM pg_sleep(least(:timeout, 0.25))) END"
        ),
        release="SELECT pg_advisory_unlock(:key)",
        numeric_key=True,
        reports_grant=True,
    ),
    driver_module="psycopg2",
    error_code_attr="pgcode",
    # SQLSTATEs: serialization failure, deadlock, admin/crash shutdown, cannot connect now, and
    # the connection-exception class; HYT00: our wait callback's time-out (a stall).
    transient_codes=frozenset(
        {"40001", "40P01", "57P01", "57P02", "57P03", "08000", "08001", "08003", "08004", "08006", "HYT00"}
    ),
    # A failed connect has no SQLSTATE; an OperationalError without one is a lost link.
    codeless_operational_is_transient=True,
    # invalid_password, invalid_authorization_specification. psycopg2 gives a failed connect no
    # SQLSTATE, so on PostgreSQL a refused password is not told from a lost link.
    auth_codes=frozenset({"28P01", "28000"}),
    refused_login_has_no_code=True,
    # HYT00: no answer within the round trip's bound (pgwait.STALL_SQLSTATE; no server sends
    # it): psycopg2 has closed the connection. A dead link ends in an error SQLAlchemy already
    # calls a disconnect.
    stall_codes=frozenset({"HYT00"}),
    waits_bounded_by_callback=True,
)

ENGINES: Mapping[str, Engine] = MappingProxyType({e.name: e for e in (MYSQL, POSTGRESQL)})
DEFAULT_ENGINE = MYSQL.name  # when neither 'db-engine' nor the secret names one

# A secret's "engine" (any case) -> our engine name.
SECRET_ENGINES: Mapping[str, str] = MappingProxyType(
    {alias: e.name for e in ENGINES.values() for alias in e.secret_engines}
)


def names() -> str:
    """The engines for a message: ``mysql or postgresql``."""
    return " or ".join(ENGINES)
