"""The database engines a shared study may live on: one record per engine, in one table.

Everything that differs between engines is here: the SQLAlchemy driver, the default port, the
names RDS writes in a secret's ``engine``, the driver's connect arguments (time-out, TLS), the
named lock that makes schema creation race-safe, and the driver's error codes worth retrying.
Settings, the launcher, credentials.py, storage.py and dberrors.py all read this table, so adding
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
    tls_ca_arg: str  # the driver's CA bundle argument
    tls_args: Mapping[str, Any]  # what turns on verified TLS, with the CA bundle
    lock: SchemaLock
    driver_module: str  # the DB-API module, imported only by code that meets its errors
    error_code_attr: str  # where the driver's exceptions carry the server's error code
    transient_codes: frozenset[int | str]  # error codes worth waiting for (never message text)
    codeless_operational_is_transient: bool  # an OperationalError without code: a lost link

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
    # timeout, deadlock, connection killed.
    transient_codes=frozenset({2003, 2005, 2006, 2013, 2055, 1040, 1053, 1205, 1213, 1927, 4031}),
    codeless_operational_is_transient=False,
)

POSTGRESQL = Engine(
    name="postgresql",
    driver="postgresql+psycopg2",
    dialect_default_driver="psycopg2",
    default_port=5432,
    secret_engines=("postgres", "postgresql", "aurora-postgresql"),
    connect_args=_frozen(),
    timeout_arg="connect_timeout",
    tls_ca_arg="sslrootcert",
    tls_args=_frozen(sslmode="verify-full"),
    lock=SchemaLock(
        acquire="SELECT pg_advisory_lock(:key)",
        release="SELECT pg_advisory_unlock(:key)",
        numeric_key=True,
        reports_grant=False,
    ),
    driver_module="psycopg2",
    error_code_attr="pgcode",
    # SQLSTATEs: serialization failure, deadlock, admin/crash shutdown, cannot connect now, and
    # the connection-exception class.
    transient_codes=frozenset(
        {"40001", "40P01", "57P01", "57P02", "57P03", "08000", "08001", "08003", "08004", "08006"}
    ),
    # A failed connect has no SQLSTATE; an OperationalError without one is a lost link.
    codeless_operational_is_transient=True,
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
