"""Run the real `serve` command on a free local port: for tests, the demo and the benchmark."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from serving import constants as C
from serving.config import cpu_count

LOCALHOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = C.GRACEFUL_TIMEOUT_SECONDS + 5.0
POLL_SECONDS = 0.05
# The server's log lines (serving.server's WORKER_READY_LOG and WORKER_PUBLISHED_LOG), without
# importing the server. Behind nginx a worker logs its model as loaded a moment before nginx can
# reach it: a test that stops or loads "every worker" must wait for the second line.
LOADED_MARK = ": model loaded from "
PUBLISHED_MARK = ": taking requests and pings on slot "


def free_port() -> int:
    """A port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def serve_command() -> list[str]:
    """The installed `serve` console script next to this Python (the one SageMaker runs)."""
    script = Path(sys.executable).parent / "serve"
    if not script.exists():
        raise FileNotFoundError(f"{script} not found: run `make install`")
    return [str(script)]


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request to the local server: (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class LocalServer:
    """`serve` as a child process on a free port, its log in a file; a context manager."""

    def __init__(
        self, model_dir: str | Path, log_path: str | Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.model_dir = Path(model_dir)
        self.log_path = Path(log_path)
        self.port = free_port()
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen | None = None

    def environment(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_"))}
        base.update({C.ENV_MODEL_DIR: str(self.model_dir), C.ENV_BIND_TO_PORT: str(self.port)})
        base.update(self.extra_env)
        return base

    def start(self) -> LocalServer:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(  # its own process group: a kill reaches nginx and gunicorn too
                serve_command(),
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def workers(self) -> int:
        return int(self.extra_env.get(C.ENV_WORKERS) or cpu_count())

    def master_pid(self) -> int:
        """The gunicorn master's pid (Linux /proc): `serve` itself without a proxy, else its
        child that is not nginx."""
        assert self.proc is not None, "not started"
        if self.extra_env.get(C.ENV_PROXY, C.PROXY_NGINX) == C.PROXY_NONE:
            return self.proc.pid
        return next(pid for pid in _children(self.proc.pid) if not _command(pid).startswith("nginx"))

    def worker_pids(self) -> set[int]:
        """The gunicorn workers' pids: the master's children."""
        return set() if self.proc is None else set(_children(self.master_pid()))

    def ready_workers(self) -> int:
        """Workers that take requests: behind nginx those that have published their sockets,
        without it those that have loaded their model (replaced workers count again)."""
        proxied = self.extra_env.get(C.ENV_PROXY, C.PROXY_NGINX) != C.PROXY_NONE
        return self.log().count(PUBLISHED_MARK if proxied else LOADED_MARK)

    def wait_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> LocalServer:
        """Poll /ping until 200 and every worker has its model; raise (with the log) otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if (
                    self.ready_workers() >= self.workers
                    and request(self.port, "GET", C.ROUTE_PING, timeout=2.0)[0] == 200
                ):
                    return self
            except OSError:
                pass
            time.sleep(POLL_SECONDS)
        raise TimeoutError(f"serve did not become ready within {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """SIGTERM, as SageMaker sends it; the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        try:  # anything of the group that outlived `serve` (it stops its children itself)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def request(self, method: str, path: str, body: bytes | None = None, **headers: str):
        """A request with headers as keywords (Content_Type= -> Content-Type)."""
        return request(self.port, method, path, body, {k.replace("_", "-"): v for k, v in headers.items()})

    def __enter__(self) -> LocalServer:
        return self.start().wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _command(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace")
