"""nginx in front of gunicorn, as in the AWS inference containers: it buffers whole requests.

A sync worker reading a slow client's headers or body is a worker lost for as long as the client
likes; two such clients on a 2-CPU host were enough to keep /ping unanswered for a minute.
nginx reads every request completely (headers and up to the body limit, in memory) before it
hands it to a gunicorn worker over that worker's unix socket, and buffers the answer, so the
workers only ever see whole requests at memory speed. Over-limit bodies are refused by nginx itself (413,
in the same one-line text/plain form as our other refusals).
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from serving import constants as C
from serving.config import ServeConfig
from serving.errors import StartupError

if TYPE_CHECKING:
    from serving.server import WorkerSockets

log = logging.getLogger(__name__)

IN_MEMORY_BODY_LIMIT = (
    8 * C.MB
)  # bodies up to this stay in memory; larger ones (batch transform) spill to disk
RESPONSE_BUFFERS = "64 64k"  # 4 MB of answer in memory per request before nginx spills to a temp file
SHUTDOWN_SECONDS = C.GRACEFUL_TIMEOUT_SECONDS - 5  # nginx drains first, then gunicorn gets the rest
# Idle upstream connections nginx keeps open to gunicorn: a request reuses one instead of a new
# connect + accept (measured: about 1.3x the requests/s at concurrency 8). nginx closes an idle
# one before gunicorn would (C.UPSTREAM_KEEPALIVE_SECONDS), so it never sends a request on a
# connection gunicorn is closing (a POST is not retried: that would be a 502).
UPSTREAM_IDLE_CONNECTIONS = 32
UPSTREAM_IDLE_SECONDS = C.UPSTREAM_KEEPALIVE_SECONDS - 10
FAIL_SECONDS = 1  # a worker nginx could not reach is skipped this long (render_config)
# Many idle clients (a load balancer's or SDK clients' keep-alive connections, or a flood of
# connections that send nothing) must not take /ping down: nginx's default 1,024 connections
# were used up by 1,100 idle ones. Each client may hold a connection to a worker as well.
WORKER_CONNECTIONS = 16_384
FILES_PER_CONNECTION = 2  # a client's connection and, while it is served, one to a worker
SPARE_FILES = 64  # logs, sockets to the workers, temp files
OPEN_FILES = FILES_PER_CONNECTION * WORKER_CONNECTIONS + SPARE_FILES
LISTEN_BACKLOG = 4_096  # the kernel caps it at net.core.somaxconn (4096 by default on Linux 5.4+)
HEADER_SECONDS = 20  # a connection that sends no complete request headers in this time is closed
# An idle keep-alive connection is closed after this; SageMaker's front end reuses its
# connections, and nginx's default (75 s) keeps one open longer than a client's typical 60 s.
KEEPALIVE_SECONDS = 75

CONFIG = """\
# Written by `serve` (serving/nginx.py) at every start.
daemon off;
worker_processes 1;
pid {run_dir}/nginx.pid;
error_log stderr warn;
worker_shutdown_timeout {shutdown}s;
worker_rlimit_nofile {open_files};

events {{
    worker_connections {worker_connections};
    multi_accept on;  # a burst of new connections is taken in one wake-up
}}

http {{
    access_log off;
    server_tokens off;
    default_type text/plain;
    client_body_temp_path {run_dir}/client_body;
    proxy_temp_path {run_dir}/proxy;
    fastcgi_temp_path {run_dir}/fastcgi;
    uwsgi_temp_path {run_dir}/uwsgi;
    scgi_temp_path {run_dir}/scgi;

    upstream model_server {{
        least_conn;  # to the worker with the fewest requests in flight (a socket per worker)
{servers}
        keepalive {idle_connections};
        keepalive_timeout {idle_seconds}s;
    }}

    upstream ping_server {{  # each worker's ping thread (serving/ping.py); a refused one: the next
{ping_servers}
    }}

    server {{
        listen {port} backlog={backlog};

        # Whole requests only: slow senders wait here, not in a model worker.
        client_max_body_size {max_body};
        client_body_buffer_size {body_buffer};
        client_header_timeout {header_seconds}s;
        keepalive_timeout {keepalive_seconds}s;
        reset_timedout_connection on;  # a timed-out client's socket is freed at once
        client_body_timeout {slow_client}s;
        send_timeout {slow_client}s;
        proxy_request_buffering on;
        proxy_buffering on;
        proxy_buffer_size 64k;
        proxy_buffers {response_buffers};
        proxy_connect_timeout 5s;
        proxy_read_timeout {timeout}s;
        proxy_send_timeout {timeout}s;
        proxy_set_header Host $host;
        proxy_http_version 1.1;         # keep-alive to gunicorn needs HTTP/1.1 ...
        proxy_set_header Connection ""; # ... and no "Connection: close" from nginx

        error_page 413 @too_large;
        error_page 502 503 =503 @unavailable;  # a 503, whichever nginx met
        error_page 504 @timed_out;

        location / {{
            proxy_pass http://model_server;
        }}
        # SageMaker gives /ping 2 s: a worker whose ping thread does not answer within 0.75 s
        # (stopped, or a hook holding the GIL in one C call) is skipped for the next one.
        location = {ping} {{
            proxy_pass http://ping_server;
            proxy_connect_timeout 500ms;
            proxy_send_timeout 750ms;
            proxy_read_timeout 750ms;
            proxy_next_upstream error timeout;
            proxy_next_upstream_timeout 1500ms;
            error_page 413 @too_large;
            error_page 502 503 504 =503 @unavailable;
            # Pings come every few seconds while the workers load, and each would log a [crit]
            # "connect() failed" per worker: the 503 says it already.
            error_log stderr alert;
        }}
        location @too_large {{
            return 413 "body is over the {max_body} byte limit\\n";
        }}
        location @unavailable {{
            return 503 "the model server is starting, or its worker died (details are in the server log)\\n";
        }}
        location @timed_out {{
            return 504 "no answer within {timeout} s ({timeout_env})\\n";
        }}
    }}
}}
"""


def nginx_binary() -> str:
    """The nginx executable, or a StartupError that says how to get one."""
    found = shutil.which("nginx") or next((p for p in C.NGINX_PATHS if os.access(p, os.X_OK)), None)
    if found is None:
        raise StartupError(
            f"nginx not found (on PATH or {', '.join(C.NGINX_PATHS)}): install it (apt-get install nginx), "
            f"or set {C.ENV_PROXY}={C.PROXY_NONE} to serve without it (slow clients can then block /ping)"
        )
    return found


def file_limits() -> tuple[int, int]:
    """nginx's open-file limit and worker connections for this process's limits.

    As root nginx raises its own limit (``worker_rlimit_nofile``). Otherwise it cannot pass the
    hard limit: the soft limit is raised to the hard one here (nginx inherits it) and the worker
    connections are sized to what was obtained, with a warning below WORKER_CONNECTIONS, so that
    idle clients meet a full queue, not "Too many open files" that resets /ping too.
    """
    if os.geteuid() == 0:
        return OPEN_FILES, WORKER_CONNECTIONS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    files = OPEN_FILES if soft == resource.RLIM_INFINITY else min(soft, OPEN_FILES)
    connections = max((files - SPARE_FILES) // FILES_PER_CONNECTION, 1)
    if connections < WORKER_CONNECTIONS:
        log.warning(
            "serve: open files limited to %d (hard limit), so nginx takes %d connections at once "
            "(%d wanted): raise the container's nofile ulimit for many idle clients",
            files,
            connections,
            WORKER_CONNECTIONS,
        )
    return files, connections


def render_config(
    config: ServeConfig, run_dir: Path, sockets: WorkerSockets, limits: tuple[int, int] | None = None
) -> str:
    """nginx's configuration; ``limits`` (open files, worker connections) from file_limits()."""
    open_files, worker_connections = limits or (OPEN_FILES, WORKER_CONNECTIONS)

    # A worker's socket names are missing while it loads its model (serving/server.py): after
    # one failed connect nginx leaves that worker alone for a second (one log line a second, not
    # one per request) and retries it then. nginx's default, 10 s, would keep requests from a
    # replacement that is ready; when every worker has failed, nginx tries them all again at once.
    def servers(paths: Sequence[str]) -> str:
        return "\n".join(
            f"        server unix:{path} max_fails=1 fail_timeout={FAIL_SECONDS}s;" for path in paths
        )

    return CONFIG.format(
        run_dir=run_dir,
        servers=servers(sockets.requests),
        ping_servers=servers(sockets.ping),
        ping=C.ROUTE_PING,
        port=config.port,
        max_body=config.max_body_bytes,
        body_buffer=min(config.max_body_bytes, IN_MEMORY_BODY_LIMIT),
        slow_client=C.SLOW_CLIENT_TIMEOUT_SECONDS,
        response_buffers=RESPONSE_BUFFERS,
        timeout=config.timeout,
        timeout_env=C.ENV_TIMEOUT,
        shutdown=SHUTDOWN_SECONDS,
        idle_connections=UPSTREAM_IDLE_CONNECTIONS,
        idle_seconds=UPSTREAM_IDLE_SECONDS,
        open_files=open_files,
        worker_connections=worker_connections,
        backlog=LISTEN_BACKLOG,
        header_seconds=HEADER_SECONDS,
        keepalive_seconds=KEEPALIVE_SECONDS,
    )


def write_config(config: ServeConfig, run_dir: Path, sockets: WorkerSockets) -> Path:
    path = run_dir / "nginx.conf"
    path.write_text(render_config(config, run_dir, sockets, file_limits()))
    return path


def command(binary: str, run_dir: Path, conf: Path) -> list[str]:
    """nginx in the foreground, everything (prefix, config, early errors) under run_dir / stderr."""
    return [binary, "-p", str(run_dir), "-c", str(conf), "-e", "stderr"]
