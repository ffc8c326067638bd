"""Which database errors are worth waiting for, and a bounded retry around them.

Errors are classified by the drivers' error codes (never by matching message text), listed per
engine in core/engines.py.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import sqlalchemy
import tenacity

from core.engines import ENGINES, Engine

logger = logging.getLogger(__name__)
T = TypeVar("T")
SLOW_CALL_S = 5.0  # a database call waiting this long is logged while it waits (a stall's start)


@functools.cache
def _driver_errors() -> tuple[tuple[type[BaseException], type[BaseException], Engine], ...]:
    """Each engine's DB-API ``Error`` and ``OperationalError`` classes (PEP 249 names them)."""
    modules = [(importlib.import_module(e.driver_module), e) for e in ENGINES.values()]
    return tuple((m.Error, m.OperationalError, e) for m, e in modules)


def _driver_error(err: BaseException) -> bool:
    return any(isinstance(err, error) for error, _, _ in _driver_errors())


class StorageUnreachable(ConnectionError):
    """The server of the study (another host's proxy: entrypoint/multihost/proxy.py) did not answer in
    time: worth waiting for, like a database that is away."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _code(err: BaseException, operational: type[BaseException], engine: Engine) -> object:
    """The driver error code of ``err`` (None when it has none that counts)."""
    code = getattr(err, engine.error_code_attr, None)
    if code in engine.operational_only_codes and not isinstance(err, operational):
        return None
    return code


def _codes(exc: BaseException) -> Iterator[tuple[object, Engine]]:
    """The driver error codes in ``exc``'s chain, with the engine of each."""
    for err in _chain(exc):
        for error, operational, engine in _driver_errors():
            if isinstance(err, error):
                yield _code(err, operational, engine), engine


def is_auth_failure(exc: BaseException) -> bool:
    """True when the server refused the user name or password."""
    return any(code in engine.auth_codes for code, engine in _codes(exc))


def may_be_refused_login(exc: BaseException) -> bool:
    """True when ``exc`` may be a refused password that its driver gives no code: an
    OperationalError without one, of an engine whose refused logins come so (PostgreSQL)."""
    for err in _chain(exc):
        for _error, operational, engine in _driver_errors():
            if (
                isinstance(err, operational)
                and engine.refused_login_has_no_code
                and _code(err, operational, engine) is None
            ):
                return True
    return False


def is_stall(exc: BaseException) -> bool:
    """True when a round trip timed out (the server stopped answering): the driver closed the
    connection."""
    return any(code in engine.stall_codes for code, engine in _codes(exc))


def is_cert_failure(exc: BaseException) -> bool:
    """True when the server's TLS certificate failed verification (wrong CA or host name)."""
    return any(isinstance(err, ssl.SSLCertVerificationError) for err in _chain(exc))


def is_transient(exc: BaseException) -> bool:
    """True for lost connections, restarts, deadlocks and lock wait timeouts; never for a server
    whose certificate failed verification (the driver reports it as a lost connection, 2055)."""
    if is_cert_failure(exc):
        return False
    for err in _chain(exc):
        if isinstance(err, StorageUnreachable):
            return True
        if isinstance(err, sqlalchemy.exc.DBAPIError) and err.connection_invalidated:
            return True
        for error, operational, engine in _driver_errors():
            if isinstance(err, error):
                code = _code(err, operational, engine)
                if code in engine.transient_codes or (
                    code is None and engine.codeless_operational_is_transient and isinstance(err, operational)
                ):
                    return True
        if isinstance(err, sqlalchemy.exc.TimeoutError):  # pool exhausted while the server was away
            return True
    return False


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def describe(exc: BaseException) -> str:
    """The driver's own message (no SQL text, no parameters), for a failure file.

    SQLAlchemy's own text carries the SQL statement and its parameters, so for its errors the
    message of the driver's exception underneath (``orig``) is used instead.
    """
    for err in _chain(exc):
        if is_stall(err):  # the driver's own text is a paragraph of advice
            return f"{type(err).__name__}: no answer from the database server in time (it stopped answering)"
        if _driver_error(err):
            return _one_line(err)
    for err in _chain(exc):
        if isinstance(err, sqlalchemy.exc.DBAPIError) and err.orig is not None:
            return f"{type(err.orig).__name__}: {_one_line(err.orig)}"
    for err in _chain(exc):  # e.g. Optuna's StorageInternalError around a SQLAlchemy error
        if not isinstance(err, sqlalchemy.exc.SQLAlchemyError) and str(err):
            return f"{type(err).__name__}: {_one_line(err)}"
    return type(exc).__name__


class _Watchdog:
    """Logs a database call that has waited SLOW_CALL_S, while it waits: a server that stopped
    answering is in the log when the stall begins, not only once a time-out ends the call. One
    thread for the process, started with the first call."""

    def __init__(self) -> None:
        self._waiting: dict[int, tuple[str, float]] = {}  # thread id -> (call, its start)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def enter(self, what: str) -> None:
        self._waiting[threading.get_ident()] = (what, time.monotonic())
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="db-watchdog", daemon=True)
                    self._thread.start()

    def leave(self) -> None:
        self._waiting.pop(threading.get_ident(), None)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """A wait that is no stall (another job's lock): not timed; the clock restarts after."""
        entry = self._waiting.pop(threading.get_ident(), None)
        try:
            yield
        finally:
            if entry is not None:
                self.enter(entry[0])

    def _run(self) -> None:
        logged: set[tuple[int, float]] = set()
        while True:
            time.sleep(1.0)  # the watchdog's pace: a slow call is logged within a second
            now = time.monotonic()
            waiting = dict(self._waiting)
            for ident, (what, since) in waiting.items():
                if now - since >= SLOW_CALL_S and (ident, since) not in logged:
                    logged.add((ident, since))
                    logger.warning(
                        "The database has not answered for %.0f s while %s: waiting up to its "
                        "time-outs, then retrying within db-retry-timeout",
                        now - since,
                        what,
                    )
            logged &= {(ident, since) for ident, (_, since) in waiting.items()}


_WATCHDOG = _Watchdog()
not_timed = _WATCHDOG.paused  # for a call whose long wait is expected (a lock): no stall warning


class Retrier:
    """One job's retry policy for transient database errors.

    An outage has one deadline, ``timeout_s`` after the first failed call, shared by every call
    made until one succeeds: a clean-up call after a failed one does not wait a second full
    timeout. Each backoff sleep (capped exponential, with jitter) is cut to the time left, so
    the last attempt comes at the deadline, not up to a whole backoff after it. ``limit_s``
    caps one call further (the closing summary). Waiting ends early, with the last error, when
    ``stop`` is set (the job got SIGTERM; not for a call made with ``stoppable=False``), but not
    before one immediate second try: a pooled connection that the server dropped fails once (no
    pre-ping) and the second try gets a new one.
    """

    def __init__(
        self,
        timeout_s: float,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.stop = stop or threading.Event()
        self._clock = clock
        self._sleep = sleep or self.stop.wait  # SIGTERM wakes it
        self._sleep_through_stop = sleep or time.sleep
        self._backoff = tenacity.wait_exponential_jitter(multiplier=0.5, max=15)
        self._outage_deadline: float | None = None
        self._lock = threading.Lock()

    def _deadline(self, limit: float | None) -> float:
        with self._lock:
            if self._outage_deadline is None:  # the first failure of an outage
                self._outage_deadline = self._clock() + self.timeout_s
            deadline = self._outage_deadline
        return deadline if limit is None else min(deadline, limit)

    def __call__(
        self, fn: Callable[[], T], what: str, limit_s: float | None = None, stoppable: bool = True
    ) -> T:
        limit = None if limit_s is None else self._clock() + limit_s
        sleep = self._sleep if stoppable else self._sleep_through_stop

        def wait(state: tenacity.RetryCallState) -> float:
            return max(0.0, min(self._backoff(state), self._deadline(limit) - self._clock()))

        def stop(state: tenacity.RetryCallState) -> bool:
            stopping = stoppable and self.stop.is_set() and state.attempt_number >= 2
            return stopping or self._clock() >= self._deadline(limit)

        def log(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            logger.warning(
                "Database unavailable while %s (%s); retry %d in %.1f s",
                what,
                describe(exc) if exc else "?",
                state.attempt_number,
                state.upcoming_sleep,
            )

        def timed() -> T:  # each attempt is timed, not the backoff between them
            _WATCHDOG.enter(what)
            try:
                return fn()
            finally:
                _WATCHDOG.leave()

        try:
            result = tenacity.Retrying(
                retry=tenacity.retry_if_exception(is_transient),
                stop=stop,
                wait=wait,
                sleep=sleep,
                before_sleep=log,
                reraise=True,
            )(timed)
        except Exception as exc:
            if not is_transient(exc):  # the database answered: the outage is over
                self._end_outage()
            raise
        self._end_outage()
        return result

    def _end_outage(self) -> None:
        with self._lock:
            self._outage_deadline = None


def direct(fn: Callable[[], T], what: str) -> T:
    """A database call without retries (the default where no job-wide policy is given)."""
    return fn()
