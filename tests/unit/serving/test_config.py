"""`serve` settings (serving/config.py): SageMaker's defaults, the environment, bad values refused by name."""

from __future__ import annotations

import os
import types
from pathlib import Path
from unittest import mock

import pytest

from serving import constants as C
from serving.config import ServeConfig
from serving.errors import StartupError
from serving.server import WorkerSockets, gunicorn_options

# --- settings -------------------------------------------------------------------------------------


@pytest.mark.unit
def test_defaults_follow_the_sagemaker_contract():
    config = ServeConfig.from_environ({})
    assert (str(config.model_dir), config.port, config.timeout) == ("/opt/ml/model", 8080, 60)
    assert config.workers >= 1 and config.max_body_bytes == 6 * 1024 * 1024
    assert config.proxy == "nginx" and config.threads == C.DEFAULT_THREADS
    options = gunicorn_options(config, WorkerSockets.in_folder(Path("/run"), 2))  # behind nginx
    assert options["bind"] == [
        "unix:/run/bound-0.sock",
        "unix:/run/bound-1.sock",
    ]  # named for nginx once loaded
    assert options["workers"] == config.workers and options["threads"] == 1  # one request at a time
    assert options["worker_class"] == "gthread" and options["threads"] == C.DEFAULT_THREADS
    assert options["graceful_timeout"] < 30  # SageMaker sends SIGKILL 30 s after SIGTERM
    assert options["control_socket_disable"] and options["accesslog"] is None
    direct = gunicorn_options(config)  # SERVING_PROXY=none: the port itself, sync workers
    assert direct["bind"] == ["0.0.0.0:8080"] and direct["worker_class"] == "sync"


@pytest.mark.unit
def test_each_worker_keeps_its_own_socket_and_a_replacement_takes_the_dead_ones(tmp_path):
    sockets = WorkerSockets.in_folder(tmp_path, 3)
    arbiter = types.SimpleNamespace(WORKERS={}, _num_workers=3)
    listeners = ["listener-0", "listener-1", "listener-2"]  # gunicorn binds all, in this order
    for path in sockets.bound:  # stand-ins for the sockets the arbiter binds
        Path(path).touch()

    def spawn(pid: int, age: int) -> types.SimpleNamespace:
        worker = types.SimpleNamespace(age=age, sockets=list(listeners))
        sockets.assign(arbiter, worker)  # pre_fork, in the arbiter
        arbiter.WORKERS[pid] = worker
        sockets.keep_only_own(arbiter, worker)  # post_fork, in the worker
        return worker

    workers = [spawn(pid, age) for pid, age in ((10, 1), (11, 2), (12, 3))]
    assert [w.sockets for w in workers] == [["listener-0"], ["listener-1"], ["listener-2"]]
    assert not any(os.path.lexists(path) for path in sockets.requests)  # nginx sees none yet
    with mock.patch("serving.ping.start") as start_ping:
        sockets.publish(workers[1])  # post_worker_init: worker 11's model is loaded
    assert os.readlink(sockets.requests[1]) == sockets.bound[1]
    start_ping.assert_called_once_with(sockets.ping[1])
    del arbiter.WORKERS[11]  # the worker on slot 1 died and was reaped ...
    sockets.withdraw(arbiter, workers[1])  # ... and child_exit takes its name from nginx
    assert not os.path.lexists(sockets.requests[1])
    assert spawn(13, 4).sockets == ["listener-1"] and arbiter.WORKERS[13].socket_slot == 1
    # A reload (SIGHUP) starts new workers before the old ones leave: they share the slots, and
    # an old one leaving does not withdraw the name its successor published.
    reloaded = spawn(14, 5)
    Path(sockets.requests[reloaded.socket_slot]).touch()
    old = next(w for pid, w in arbiter.WORKERS.items() if pid != 14 and w.socket_slot == reloaded.socket_slot)
    del arbiter.WORKERS[next(pid for pid, w in arbiter.WORKERS.items() if w is old)]
    sockets.withdraw(arbiter, old)
    assert os.path.lexists(sockets.requests[reloaded.socket_slot])
    # SIGTTIN / SIGTTOU: the count stays (one worker per socket).
    sockets.keep_count(arbiter, 4, 3)
    assert arbiter._num_workers == 3


@pytest.mark.unit
def test_settings_from_the_environment():
    config = ServeConfig.from_environ(
        {
            "SM_MODEL_DIR": "/m",
            "SAGEMAKER_BIND_TO_PORT": "9000",
            "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
            "SAGEMAKER_MODEL_SERVER_TIMEOUT": "20",
            "SAGEMAKER_PROGRAM": "inference.py",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "20",
        }
    )
    assert (str(config.model_dir), config.port, config.workers, config.timeout) == ("/m", 9000, 3, 20)
    assert config.program == "inference.py" and config.max_body_bytes == 20 * 1024 * 1024
    assert gunicorn_options(config)["graceful_timeout"] == 20


@pytest.mark.unit
@pytest.mark.parametrize(
    "env",
    [
        {"SAGEMAKER_MODEL_SERVER_WORKERS": "0"},
        {"SAGEMAKER_BIND_TO_PORT": "http"},
        {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "-1"},
        {"SERVING_PROXY": "apache"},
        {"SERVING_THREADS": "0"},
    ],
)
def test_bad_settings_are_refused_by_name(env):
    with pytest.raises(StartupError, match=next(iter(env))):
        ServeConfig.from_environ(env)


@pytest.mark.unit
def test_without_nginx_serve_says_what_to_do(monkeypatch, tmp_path):
    from serving.nginx import nginx_binary

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(C, "NGINX_PATHS", (str(tmp_path / "sbin" / "nginx"),))
    with pytest.raises(StartupError) as refused:
        nginx_binary()
    assert "nginx not found" in str(refused.value) and "SERVING_PROXY=none" in str(refused.value)
