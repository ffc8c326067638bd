"""Slow and heavy clients against a local server, and /ping timed meanwhile: for tests and the benchmark.

- SlowClients: connections that send a request a byte (headers) or a kilobyte (body) per
  tick and never finish it, as a slow or hostile client does.
- BatchLoad: threads that POST a large batch again and again, so the workers are always busy.
- ping_latencies: sequential GET /ping, each on a new connection, timed.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections import Counter

from devtools.localserver import LOCALHOST
from serving import constants as C

TICK_SECONDS = 1.0
SLOW_BODY_BYTES = 5 * C.MB  # declared by each slow-body connection, sent a kilobyte per tick
BODY_CHUNK = b"0" * 1024


class SlowClients:
    """``headers`` connections sending their headers a byte per tick, ``bodies`` sending a 5 MB
    body a kilobyte per tick; a context manager (one thread drives them all)."""

    def __init__(self, port: int, headers: int, bodies: int, tick: float = TICK_SECONDS) -> None:
        self.port = port
        self.counts = (headers, bodies)
        self.tick = tick
        self._header_socks: list[socket.socket] = []
        self._body_socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drive, name="slow-clients", daemon=True)
        self.closed_by_server = 0

    def __enter__(self) -> SlowClients:
        headers, bodies = self.counts
        for _ in range(headers):
            sock = socket.create_connection((LOCALHOST, self.port), timeout=5)
            sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: slow\r\nX-Slow: ")  # never ends its headers
            self._header_socks.append(sock)
        for _ in range(bodies):
            sock = socket.create_connection((LOCALHOST, self.port), timeout=5)
            sock.sendall(
                b"POST /invocations HTTP/1.1\r\nHost: slow\r\nContent-Type: application/x-npy\r\n"
                b"Content-Length: %d\r\n\r\n" % SLOW_BODY_BYTES
            )
            self._body_socks.append(sock)
        self._thread.start()
        return self

    def _drive(self) -> None:
        while not self._stop.wait(self.tick):
            for socks, data in ((self._header_socks, b"a"), (self._body_socks, BODY_CHUNK)):
                for sock in list(socks):
                    try:
                        sock.send(data)
                    except OSError:  # the server gave up on it
                        socks.remove(sock)
                        sock.close()
                        self.closed_by_server += 1

    @property
    def open_connections(self) -> int:
        return len(self._header_socks) + len(self._body_socks)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self._header_socks + self._body_socks:
            sock.close()


class BatchLoad:
    """``clients`` threads POSTing ``body`` to /invocations in a loop until stopped; a context manager."""

    def __init__(
        self, port: int, body: bytes, content_type: str, accept: str, clients: int, timeout: float = 120.0
    ) -> None:
        self.port = port
        self.body = body
        self.headers = {"Content-Type": content_type, "Accept": accept}
        self.timeout = timeout
        self.statuses: Counter[int | str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(clients)]

    def _loop(self) -> None:
        while not self._stop.is_set():
            conn = http.client.HTTPConnection(LOCALHOST, self.port, timeout=self.timeout)
            try:
                conn.request("POST", C.ROUTE_INVOCATIONS, body=self.body, headers=self.headers)
                resp = conn.getresponse()
                resp.read()
                status: int | str = resp.status
            except (OSError, http.client.HTTPException) as e:
                status = type(e).__name__
            finally:
                conn.close()
            with self._lock:
                self.statuses[status] += 1

    def wait_for_answers(self, count: int, timeout: float) -> bool:
        """True once ``count`` answers of any kind are in (the load is really running)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(self.statuses.values()) >= count:
                return True
            self._stop.wait(0.05)
        return False

    def __enter__(self) -> BatchLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout)


def ping_latencies(port: int, count: int, timeout: float, spacing: float = 0.1) -> list[float]:
    """``count`` sequential pings, each on a new connection; seconds each, ``inf`` when it failed
    or took longer than ``timeout``."""
    latencies = []
    for _ in range(count):
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection(LOCALHOST, port, timeout=timeout)
        try:
            conn.request("GET", C.ROUTE_PING)
            resp = conn.getresponse()
            resp.read()
            latency = time.perf_counter() - t0 if resp.status == 200 else float("inf")
        except (OSError, http.client.HTTPException):
            latency = float("inf")
        finally:
            conn.close()
        latencies.append(latency)
        time.sleep(spacing)  # paces the probes; no outcome depends on it
    return latencies
