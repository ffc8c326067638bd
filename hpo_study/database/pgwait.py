"""PostgreSQL round trips bounded in time, as MySQL's are by the driver's read time-out.

libpq has no read time-out: TCP keepalives and ``tcp_user_timeout`` end a connection whose
network path died, but a server that is alive at the TCP level and does not answer (a paused
or frozen instance, a stopped backend) kept a job's query waiting for as long as it stayed
silent. psycopg2's documented hook for waiting, ``psycopg2.extensions.set_wait_callback``
(https://www.psycopg.org/docs/extensions.html#psycopg2.extensions.set_wait_callback), runs
every connect and query in libpq's non-blocking mode and hands each wait to a Python function.
Ours is psycopg2's own ``extras.wait_select`` loop with a deadline per wait: when no byte
comes (or none can be sent) for the connection's ``io_timeout_s``, it raises :class:`Stalled`;
psycopg2 then closes the connection, and the error reaches SQLAlchemy as a lost link
(hpo_study/database/locate.py's handle_error hook, core/engines.py's ``stall_codes``).

Hand-written: psycopg2 ships the wait loop but no time-out for it. The callback is process-wide;
a connection made without :func:`connection_factory` (no ``io_timeout_s``) waits as long as it
takes, as libpq's blocking calls did. libpq's ``connect_timeout`` does not apply to a
non-blocking connect, so each wait of a connect is bounded the same way.
"""

from __future__ import annotations

import functools
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


@functools.cache
def connection_factory(io_timeout_s: float) -> type[psycopg2.extensions.connection]:
    """A connection class (psycopg2.connect's ``connection_factory``) whose round trips end
    after ``io_timeout_s`` without progress, and whose connect after the DSN's
    ``connect_timeout``; installs the wait callback."""
    psycopg2.extensions.set_wait_callback(wait)
    return type("BoundedConnection", (_BoundedConnection,), {"io_timeout_s": float(io_timeout_s)})


class _BoundedConnection(psycopg2.extensions.connection):
    io_timeout_s: float | None = None
    connect_deadline: float | None = None  # monotonic; set while __init__ connects

    def __init__(self, dsn: str, *args: Any, **kwargs: Any) -> None:
        # In non-blocking mode libpq ignores connect_timeout: the wait callback applies it to
        # the whole connect, as libpq would (it runs inside this __init__).
        connect_timeout = psycopg2.extensions.parse_dsn(dsn).get("connect_timeout")
        if connect_timeout and float(connect_timeout) > 0:
            self.connect_deadline = time.monotonic() + float(connect_timeout)
        super().__init__(dsn, *args, **kwargs)
        self.connect_deadline = None


def _bound_s(conn: Any) -> float | None:
    """How long the next wait may take: the connect's remaining time, else the round trip's."""
    deadline = getattr(conn, "connect_deadline", None)
    if deadline is not None:
        return max(0.0, deadline - time.monotonic())
    return getattr(conn, "io_timeout_s", None)


def wait(conn: Any) -> None:
    """psycopg2's wait callback: poll the connection until its operation is done, each wait for
    the socket bounded by :func:`_bound_s` (unbounded for a connection of another class)."""
    poller = select.poll()  # not select.select: a descriptor above 1023 is legal here
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        if state == psycopg2.extensions.POLL_READ:
            events = select.POLLIN
        elif state == psycopg2.extensions.POLL_WRITE:
            events = select.POLLOUT
        else:
            raise psycopg2.OperationalError(f"unexpected state from the connection's poll: {state}")
        bound_s = _bound_s(conn)
        fd = conn.fileno()
        poller.register(fd, events)
        try:
            ready = poller.poll(None if bound_s is None else bound_s * 1000)
        finally:
            poller.unregister(fd)
        if not ready:
            if getattr(conn, "connect_deadline", None) is not None:
                raise Stalled("no connection to the database server within its connect_timeout")
            raise Stalled(f"no answer from the database server within {bound_s:g} s")
