"""`serve` with 2,000 idle connections open: /ping still answers within SageMaker's 2 s."""

from __future__ import annotations

import contextlib
import resource
import socket
import statistics
import time

import pytest

from devtools.localmodel import write_model
from devtools.localserver import LocalServer, request
from serving import constants as C
from serving.errors import StartupError
from tests.support import services

IDLE_CLIENTS = 2_000
PING_LIMIT_S = 2.0  # SageMaker's time-out for one ping


@pytest.fixture
def enough_files():
    """This process opens 2,000 sockets: raise its soft limit on open files up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = IDLE_CLIENTS + 256
    if hard != resource.RLIM_INFINITY and hard < needed:
        services.unavailable(f"the hard limit on open files is {hard}, under {needed}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.process
def test_ping_answers_within_2_s_with_2000_idle_connections_open(tmp_path, enough_files):
    from serving.nginx import nginx_binary

    try:
        nginx_binary()
    except StartupError as e:
        services.unavailable(str(e))
    model_dir = tmp_path / "model"
    write_model(model_dir, 64, 10, {"n_layers": 1, "n_units_l0": 16, "optimizer": "Adam", "adam_alpha": 1e-3})
    with LocalServer(model_dir, tmp_path / "log") as server, contextlib.ExitStack() as idle:
        for _ in range(IDLE_CLIENTS):  # connected, sending nothing: each holds an nginx connection
            idle.enter_context(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        times = []
        for _ in range(20):
            t0 = time.monotonic()
            status, _, _ = request(server.port, "GET", C.ROUTE_PING, timeout=PING_LIMIT_S)
            times.append(time.monotonic() - t0)
            assert status == 200
        status, _, _ = request(
            server.port, "POST", C.ROUTE_INVOCATIONS, b"[[0]]", {"Content-Type": "application/json"}
        )
        assert status in (200, 400)  # answered (a wrong width is a 400): the workers are reachable
        log = server.log()
    print(
        f"/ping with {IDLE_CLIENTS} idle connections: median {statistics.median(times) * 1000:.1f} ms, "
        f"max {max(times) * 1000:.1f} ms over {len(times)} pings"
    )
    assert max(times) < PING_LIMIT_S
    assert "worker_connections are not enough" not in log and "Too many open files" not in log
