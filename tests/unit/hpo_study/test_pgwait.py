"""hpo_study/database/pgwait.py: psycopg2's wait callback with a bound on each wait (the real
server's stall is tests/services/test_db_faults.py's)."""

from __future__ import annotations

import socket
import time

import psycopg2
import psycopg2.extensions
import pytest

from core.engines import POSTGRESQL
from hpo_study.database import dberrors, pgwait


class FakeConnection:
    """What the callback uses of a psycopg2 connection: poll() and fileno(), on a socket pair."""

    def __init__(self, states: list[int], io_timeout_s: float | None, connect_deadline: float | None = None):
        self.ours, self.server = socket.socketpair()
        self.states = states
        self.io_timeout_s = io_timeout_s
        self.connect_deadline = connect_deadline

    def poll(self) -> int:
        return self.states.pop(0)

    def fileno(self) -> int:
        return self.ours.fileno()


@pytest.mark.unit
def test_a_wait_with_no_answer_ends_in_a_stall_that_is_transient():
    conn = FakeConnection([psycopg2.extensions.POLL_READ], io_timeout_s=0.2)
    t0 = time.monotonic()
    with pytest.raises(pgwait.Stalled, match="no answer from the database server within 0.2 s") as info:
        pgwait.wait(conn)
    assert 0.15 <= time.monotonic() - t0 < 2
    assert info.value.pgcode == pgwait.STALL_SQLSTATE and isinstance(info.value, psycopg2.OperationalError)
    assert dberrors.is_stall(info.value) and dberrors.is_transient(info.value)
    assert pgwait.STALL_SQLSTATE in POSTGRESQL.stall_codes


@pytest.mark.unit
def test_a_wait_that_gets_its_answer_goes_on_until_the_operation_is_done():
    ok, read, write = (
        psycopg2.extensions.POLL_OK,
        psycopg2.extensions.POLL_READ,
        psycopg2.extensions.POLL_WRITE,
    )
    conn = FakeConnection([write, read, ok], io_timeout_s=5)
    conn.server.send(b"x")  # readable at once, and a socket pair has room to send
    t0 = time.monotonic()
    pgwait.wait(conn)
    assert conn.states == [] and time.monotonic() - t0 < 1


@pytest.mark.unit
def test_a_connect_is_bounded_by_its_own_deadline_not_the_round_trip_s():
    conn = FakeConnection(
        [psycopg2.extensions.POLL_READ], io_timeout_s=60, connect_deadline=time.monotonic() + 0.2
    )
    t0 = time.monotonic()
    with pytest.raises(pgwait.Stalled, match="connect_timeout"):
        pgwait.wait(conn)
    assert time.monotonic() - t0 < 2


@pytest.mark.unit
def test_an_unknown_poll_state_is_an_error_not_a_wait():
    with pytest.raises(psycopg2.OperationalError, match="unexpected state"):
        pgwait.wait(FakeConnection([99], io_timeout_s=0.1))


@pytest.mark.unit
def test_the_factory_is_a_psycopg2_connection_class_per_bound():
    factory = pgwait.connection_factory(7)
    assert issubclass(factory, psycopg2.extensions.connection) and factory.io_timeout_s == 7.0
    assert pgwait.connection_factory(7) is factory and pgwait.connection_factory(8) is not factory
    assert psycopg2.extensions.get_wait_callback() is pgwait.wait
