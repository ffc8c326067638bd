"""hpo_study/database/pgwait.py: psycopg2's wait callback with bounds (a real server's stall is
tests/services/test_db_faults.py's)."""

from __future__ import annotations

import socket
import time

import psycopg2
import psycopg2.extensions
import pytest

from core.engines import POSTGRESQL
from hpo_study.database import dberrors, pgwait

OK, READ, WRITE = psycopg2.extensions.POLL_OK, psycopg2.extensions.POLL_READ, psycopg2.extensions.POLL_WRITE
READY, SETUP = psycopg2.extensions.STATUS_READY, psycopg2.extensions.STATUS_SETUP


@pytest.fixture(autouse=True)
def wait_callback():
    """The callback is process-wide: each test leaves the one it found."""
    before = psycopg2.extensions.get_wait_callback()
    yield
    psycopg2.extensions.set_wait_callback(before)


class FakeConnection:
    """What the callback uses of a psycopg2 connection, on a socket pair: poll() gives the
    states listed (the last one again when they run out)."""

    def __init__(self, states: list[int], io_timeout_s: float | None, status=READY, dsn="") -> None:
        self.ours, self.server = socket.socketpair()
        self.states, self.polls = states, 0
        self.io_timeout_s, self.status, self.dsn = io_timeout_s, status, dsn

    def poll(self) -> int:
        self.polls += 1
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def fileno(self) -> int:
        return self.ours.fileno()

    def close(self) -> None:
        self.ours.close()
        self.server.close()


@pytest.fixture
def fake():
    made: list[FakeConnection] = []

    def make(*args, **kwargs) -> FakeConnection:
        made.append(FakeConnection(*args, **kwargs))
        return made[-1]

    yield make
    for conn in made:
        conn.close()


def timed(conn) -> tuple[float, BaseException | None]:
    t0 = time.monotonic()
    try:
        pgwait.wait(conn)
    except Exception as exc:
        return time.monotonic() - t0, exc
    return time.monotonic() - t0, None


@pytest.mark.unit
def test_an_answer_that_does_not_come_ends_in_a_stall_that_is_transient(fake):
    waited, exc = timed(fake([READ], io_timeout_s=0.3))
    assert isinstance(exc, pgwait.Stalled) and "no answer from the database server within 0.3 s" in str(exc)
    assert 0.3 <= waited < 2
    assert exc.pgcode == pgwait.STALL_SQLSTATE and isinstance(exc, psycopg2.OperationalError)
    assert dberrors.is_stall(exc) and dberrors.is_transient(exc)
    assert pgwait.STALL_SQLSTATE in POSTGRESQL.stall_codes


@pytest.mark.unit
def test_a_round_trip_with_answers_goes_on_until_it_is_done(fake):
    conn = fake([WRITE, READ, OK], io_timeout_s=5)
    conn.server.send(b"x")  # readable at once, and a socket pair has room to send
    waited, exc = timed(conn)
    assert exc is None and conn.polls == 3 and waited < 1


@pytest.mark.unit
def test_bytes_held_inside_the_connection_are_found_without_the_socket(fake):
    """The socket stays silent, but a poll of the connection finishes the read (bytes that
    libpq left in OpenSSL): found within a slice or two, not at the bound."""
    conn = fake([READ, READ, READ, OK], io_timeout_s=5)
    waited, exc = timed(conn)
    assert exc is None and waited < 5 * pgwait.POLL_SLICE_S + 0.5


@pytest.mark.unit
def test_a_connect_is_bounded_by_its_connect_timeout_not_the_round_trip_s(fake):
    conn = fake([READ], io_timeout_s=60, status=SETUP, dsn="host=db connect_timeout=2")
    waited, exc = timed(conn)
    assert isinstance(exc, pgwait.Stalled) and "connect_timeout" in str(exc)
    assert 2 <= waited < 4
    assert conn.polls == 1  # a connect is polled only when its socket is ready


@pytest.mark.unit
@pytest.mark.parametrize(
    ("value", "expected"), [("10", 10.0), ("1", 2.0), ("0", None), ("x", None), (None, None)]
)
def test_connect_timeout_is_read_as_libpq_reads_it(fake, monkeypatch, value, expected):
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    dsn = "host=db" if value is None else f"host=db connect_timeout={value}"
    assert pgwait._connect_timeout_s(fake([OK], None, dsn=dsn)) == expected
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "7")
    assert pgwait._connect_timeout_s(fake([OK], None, dsn="host=db")) == 7.0


@pytest.mark.unit
def test_an_unknown_poll_state_is_an_error_not_a_wait(fake):
    with pytest.raises(psycopg2.OperationalError, match="unexpected state"):
        pgwait.wait(fake([99], io_timeout_s=0.1))


@pytest.mark.unit
def test_the_factory_gives_one_connection_class_per_bound_and_installs_the_callback():
    psycopg2.extensions.set_wait_callback(None)
    factory = pgwait.connection_factory(7)
    assert issubclass(factory, psycopg2.extensions.connection) and factory.io_timeout_s == 7.0
    assert psycopg2.extensions.get_wait_callback() is pgwait.wait
    psycopg2.extensions.set_wait_callback(None)  # reset by someone else: the next engine installs it again
    assert pgwait.connection_factory(7) is factory and pgwait.connection_factory(8) is not factory
    assert psycopg2.extensions.get_wait_callback() is pgwait.wait
