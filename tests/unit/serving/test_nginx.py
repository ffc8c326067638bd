"""nginx's configuration (serving/nginx.py): sized to the open files it gets, following the settings."""

from __future__ import annotations

import pytest

from serving.config import ServeConfig
from serving.nginx import OPEN_FILES, SPARE_FILES, WORKER_CONNECTIONS
from serving.server import WorkerSockets, gunicorn_options


@pytest.mark.unit
@pytest.mark.parametrize(
    ("limits", "raised_to", "connections"),
    [
        ((1024, 1_048_576), OPEN_FILES, WORKER_CONNECTIONS),  # soft limit raised to what nginx needs
        ((1024, 4096), 4096, (4096 - SPARE_FILES) // 2),  # up to the hard limit, connections to fit
        ((1024, 1024), None, (1024 - SPARE_FILES) // 2),
    ],
)
def test_nginx_is_sized_to_the_open_files_it_gets_when_not_root(
    monkeypatch, caplog, limits, raised_to, connections
):
    """Without root nginx cannot pass the hard limit: `serve` raises the soft limit to it and sizes
    worker_connections so that nginx never runs out of files (which resets /ping too)."""
    from serving import nginx

    current = list(limits)
    calls = []

    def setrlimit(which, value):
        calls.append(value)
        current[:] = value

    monkeypatch.setattr(nginx.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(nginx.resource, "getrlimit", lambda which: tuple(current))
    monkeypatch.setattr(nginx.resource, "setrlimit", setrlimit)
    files, got = nginx.file_limits()
    assert got == connections and files <= current[0]
    assert calls == ([] if raised_to is None else [(raised_to, limits[1])])
    assert ("raise the container's nofile ulimit" in caplog.text) == (connections < WORKER_CONNECTIONS)


@pytest.mark.unit
def test_nginx_config_follows_the_settings(tmp_path):
    from serving.nginx import render_config

    config = ServeConfig.from_environ({"SAGEMAKER_BIND_TO_PORT": "9000", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "20"})
    text = render_config(config, tmp_path, WorkerSockets.in_folder(tmp_path, 2))
    assert "listen 9000 " in text and "least_conn;" in text  # a socket per worker, balanced
    for name in ("worker-0", "worker-1", "ping-0", "ping-1"):
        assert f"server unix:{tmp_path}/{name}.sock max_fails=1 fail_timeout=1s;" in text
    assert "location = /ping {" in text and "proxy_pass http://ping_server;" in text
    assert "client_max_body_size 20971520;" in text and "client_body_buffer_size 8388608;" in text
    assert "proxy_read_timeout 60s;" in text
    # Upstream keep-alive: HTTP/1.1 without "Connection: close", and nginx drops an idle
    # connection before gunicorn does (a POST on a connection gunicorn just closed is a 502).
    assert "keepalive 32;" in text and "proxy_http_version 1.1;" in text
    assert 'proxy_set_header Connection "";' in text
    idle = int(text.split("keepalive_timeout ")[1].split("s;")[0])
    assert idle < gunicorn_options(config, WorkerSockets.in_folder(tmp_path, 1))["keepalive"]
    default = render_config(ServeConfig.from_environ({}), tmp_path, WorkerSockets.in_folder(tmp_path, 1))
    assert "listen 8080 " in default and "client_body_buffer_size 6291456;" in default  # 6 MB in memory


@pytest.mark.unit
def test_local_server_counts_the_lines_the_workers_log():
    """devtools.localserver reads the workers' log lines without importing the server: its marks
    must stay parts of them, or a test's wait for "every worker ready" would never end (or, on
    the model-loaded line, end before nginx can reach the worker)."""
    from devtools import localserver
    from serving import server

    assert localserver.LOADED_MARK in server.WORKER_READY_LOG % (7, "/opt/ml/model", "default")
    assert localserver.PUBLISHED_MARK in server.WORKER_PUBLISHED_LOG % (7, 1)
    assert localserver.PUBLISHED_MARK not in server.WORKER_READY_LOG
