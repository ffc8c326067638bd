"""GET /ping behind nginx: a thread of its own in each worker, on a unix socket of its own.

A worker runs one request at a time (serving/server.py says why). A ping sent to the worker's
request socket would wait behind every batch queued there, past SageMaker's 2 s under load. So
nginx sends /ping here instead (serving/nginx.py): this thread answers while the worker's
request thread computes (it needs the GIL only for a moment, and a computing thread lets the
GIL go every few milliseconds; a user hook stuck in a C call that keeps the GIL holds this
thread too, so nginx gives each worker under a second before it asks the next). It starts
after the worker has loaded its model, and dies with the worker: nginx gets an answer only from
a live worker with a model, tries the next worker's socket when one is refused, and answers 503
when none answers.

nginx has read the whole request before it connects here, so the standard library's small HTTP
server is enough: no slow client ever reaches it.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import socketserver
import sys
import threading

from serving import media

log = logging.getLogger(__name__)

READ_TIMEOUT_SECONDS = 5  # nginx sends the request at once; a stuck connection is dropped


class _PingHandler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection (pings are seconds apart; nginx keeps none of these
    # open), so a request body nobody reads is never taken for the next request.
    timeout = READ_TIMEOUT_SECONDS

    # No path check: only nginx's `location = /ping` reaches this socket, and it passes the
    # path as the client wrote it (/%70ing is /ping too).
    def do_GET(self) -> None:
        self._answer(200, b"")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:  # /ping is GET only
        self.send_error(405)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_POST

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Our one-line text/plain refusal instead of the standard library's HTML page."""
        self._answer(code, f"{message or self.responses[code][0]}\n".encode())

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media.TEXT)
        self.send_header("Content-Length", str(len(body)))
        if status == 405:
            self.send_header("Allow", "GET, HEAD")
        self.end_headers()
        if body and self.command != "HEAD":  # nginx may have closed the connection after the headers
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # no access log, as for /invocations
        pass

    def version_string(self) -> str:  # no server or Python version in the answer
        return "serve"


class _PingServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True  # an open connection does not keep a stopping worker alive

    def handle_error(self, request: object, client_address: object) -> None:
        """A peer that hung up is no error; anything else goes to the log (not bare stderr)."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            log.exception("/ping failed")


def start(path: str) -> None:
    """Listen on ``path`` (replacing a dead predecessor's socket) and answer in a daemon thread."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = _PingServer(path, _PingHandler)
    os.chmod(path, 0o666)  # nginx's workers run as nobody when `serve` runs as root
    threading.Thread(target=server.serve_forever, name="ping", daemon=True).start()
