"""Which database errors are worth waiting for, and a bounded retry around them.

Errors are classified by the drivers' error codes (never by matching message text).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import mysql.connector
import psycopg2
import sqlalchemy
import tenacity

logger = logging.getLogger(__name__)
T = TypeVar("T")

# MySQL/MariaDB: connection refused/lost/gone away, server shutting down, too many
# connections, lock wait timeout, deadlock, connection killed.
MYSQL_TRANSIENT = {2003, 2005, 2006, 2013, 2055, 1040, 1053, 1205, 1213, 1927, 4031}
# PostgreSQL SQLSTATEs: serialization failure, deadlock, admin/crash shutdown, cannot connect now,
# and the connection-exception class.
PG_TRANSIENT = {"40001", "40P01", "57P01", "57P02", "57P03", "08000", "08001", "08003", "08004", "08006"}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_transient(exc: BaseException) -> bool:
    """True for lost connections, restarts, deadlocks and lock wait timeouts."""
    for err in _chain(exc):
        if isinstance(err, sqlalchemy.exc.DBAPIError) and err.connection_invalidated:
            return True
        if isinstance(err, mysql.connector.Error) and err.errno in MYSQL_TRANSIENT:
            return True
        if isinstance(err, psycopg2.Error):
            # A failed connect has no SQLSTATE; an OperationalError without one is a lost link.
            return err.pgcode in PG_TRANSIENT or (
                err.pgcode is None and isinstance(err, psycopg2.OperationalError)
            )
        if isinstance(err, sqlalchemy.exc.TimeoutError):  # pool exhausted while the server was away
            return True
    return False


def describe(exc: BaseException) -> str:
    """The driver's own message (no SQL text, no parameters), for a failure file."""
    for err in _chain(exc):
        if isinstance(err, (mysql.connector.Error, psycopg2.Error)):
            return " ".join(str(err).split())
    return type(exc).__name__


def retrying(fn: Callable[[], T], timeout_s: float, what: str, stop: threading.Event | None = None) -> T:
    """Call fn, retrying transient database errors with capped exponential backoff for timeout_s.

    Waiting ends early, with the last error, when ``stop`` is set (the job got SIGTERM), but
    not before one immediate second try: a pooled connection that the server dropped fails
    once (no pre-ping) and the second try gets a new one.
    """
    stop = stop or threading.Event()

    def log(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        logger.warning(
            "Database unavailable while %s (%s); retry %d in %.1f s",
            what,
            describe(exc) if exc else "?",
            state.attempt_number,
            state.upcoming_sleep,
        )

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_after_delay(timeout_s)
        | (lambda state: stop.is_set() and state.attempt_number >= 2),
        wait=tenacity.wait_exponential_jitter(multiplier=0.5, max=15),
        sleep=stop.wait,
        before_sleep=log,
        reraise=True,
    )(fn)


def direct(fn: Callable[[], T], what: str) -> T:
    """A database call without retries (the default where no job-wide policy is given)."""
    return fn()
