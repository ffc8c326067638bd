"""PostgreSQL round trips bounded in time, as MySQL's are by the driver's read time-out.

libpq has no read time-out: TCP keepalives and ``tcp_user_timeout`` end a connection whose
network path died, but a server that is alive at the TCP level and does not answer (a paused
or frozen instance, a stopped backend) kept a job's query waiting for as long as it stayed
silent. psycopg2's documented hook for waiting, ``psycopg2.extensions.set_wait_callback``
(https://www.psycopg.org/docs/extensions.html#psycopg2.extensions.set_wait_callback), runs
every connect and query in libpq's non-blocking mode and hands each wait to a Python function.
Ours is the loop of psycopg2's ``extras.wait_select`` with bounds: a query whose answer makes no
progress for the connection's ``io_timeout_s`` (a class from :func:`connection_factory`), and a
connect that takes longer than its ``connect_timeout`` (libpq applies it only to its blocking
connect), raise :class:`Stalled`; psycopg2 then closes the connection, and the error
reaches SQLAlchemy as a lost link (hpo_study/database/locate.py's handle_error hook,
core/engines.py's ``stall_codes``).

Hand-written: psycopg2 ships the wait loop but no time-out for it. The callback is process-wide:
a connection of another class keeps its connect_timeout and otherwise waits as long as it takes,
as libpq's blocking calls do. A signal handler that raises during a wait (the job's trial
time-out) ends the round trip and psycopg2 closes the connection, as a raise inside the pure-Python
MySQL driver does; the job's next iteration raises the time-out again (entrypoint/job/stopping.py).
"""

from __future__ import annotations

import functools
import os
import select
import time
from typing import Any

import psycopg2
import psycopg2.extensions

# A SQLSTATE no PostgreSQL server sends (class HY is the SQL/CLI standard's, HYT00 its "timeout
# expired"): it marks our own time-out, so dberrors can tell it from the server's errors.
STALL_SQLSTATE = "HYT00"


class Stalled(psycopg2.OperationalError):
    """No answer from the PostgreSQL server within the connection's round-trip bound."""

    pgcode = STALL_SQLSTATE  # the base class's attribute is read-only: a class attribute shadows it


def connection_factory(io_timeout_s: float) -> type[psycopg2.extensions.connection]:
    """A connection class (psycopg2.connect's ``connection_factory``) whose round trips end
    after ``io_timeout_s`` without progress; (re)installs the wait callback."""
    psycopg2.extensions.set_wait_callback(wait)
    return _connection_class(float(io_timeout_s))


@functools.cache
def _connection_class(io_timeout_s: float) -> type[psycopg2.extensions.connection]:
    return type("BoundedConnection", (psycopg2.extensions.connection,), {"io_timeout_s": io_timeout_s})


# While nothing arrives, the connection is polled again at least this often: libpq may hold
# bytes inside OpenSSL that the socket does not show (TLS records above libpq's read size, seen
# with TLS proxies on libpq's non-blocking API); a poll of the connection consumes them.
POLL_SLICE_S = 0.1


def _connect_timeout_s(conn: Any) -> float | None:
    """The DSN's connect_timeout, as libpq reads it (whole seconds; 1 means 2; none: None)."""
    value = psycopg2.extensions.parse_dsn(conn.dsn).get(
        "connect_timeout", os.environ.get("PGCONNECT_TIMEOUT")
    )
    try:
        seconds = int(value) if value is not None else 0
    except ValueError:
        return None  # libpq refuses it before connecting
    return None if seconds <= 0 else float(max(seconds, 2))


def wait(conn: Any) -> None:
    """psycopg2's wait callback: poll the connection until its operation is done.

    A connect (the connection still in its set-up) is bounded by the DSN's connect_timeout on
    each socket: a host that refuses sends libpq on to the next host or address, with a fresh
    bound; one that accepts and then stays silent ends the connect (unlike libpq's blocking
    connect, its non-blocking one cannot be told to move on). Any other operation is bounded
    by the connection class's ``io_timeout_s`` without progress; a connection of another class
    waits as long as it takes once connected.
    """
    connecting = conn.status == psycopg2.extensions.STATUS_SETUP
    bound_s = _connect_timeout_s(conn) if connecting else getattr(conn, "io_timeout_s", None)
    poller = select.poll()  # not select.select: a descriptor above 1023 is legal here
    socket_fd, deadline = None, None
    state = conn.poll()
    while state != psycopg2.extensions.POLL_OK:
        if state == psycopg2.extensions.POLL_READ:
            events = select.POLLIN
        elif state == psycopg2.extensions.POLL_WRITE:
            events = select.POLLOUT
        else:
            raise psycopg2.OperationalError(f"unexpected state from the connection's poll: {state}")
        fd = conn.fileno()
        if fd != socket_fd or not connecting:  # progress (or the next host): the bound starts again
            socket_fd = fd
            deadline = None if bound_s is None else time.monotonic() + bound_s
        # Reading a query's answer: look into libpq's buffers every slice, not only the socket's
        # (never while connecting: libpq's connect must be polled only once the socket is ready).
        peek = events == select.POLLIN and not connecting
        poller.register(fd, events)
        try:
            state = _next_state(conn, poller, deadline, POLL_SLICE_S if peek else None)
        finally:
            poller.unregister(fd)
        if state is None:
            raise Stalled(
                "no connection to the database server within its connect_timeout"
                if connecting
                else f"no answer from the database server within {bound_s:g} s"
            )


def _next_state(conn: Any, poller: select.poll, deadline: float | None, peek_s: float | None) -> int | None:
    """The connection's state once its socket is ready (or, every ``peek_s``, once a poll of the
    connection moves on), or None at ``deadline``."""
    while True:
        left_s = None if deadline is None else deadline - time.monotonic()
        if left_s is not None and left_s <= 0:
            return None
        wait_s = left_s if peek_s is None else (peek_s if left_s is None else min(peek_s, left_s))
        if poller.poll(None if wait_s is None else wait_s * 1000):
            return conn.poll()
        if peek_s is not None:
            state = conn.poll()
            if state != psycopg2.extensions.POLL_READ:
                return state
