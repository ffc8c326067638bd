"""gunicorn, configured in code: a master that forks one sync worker per CPU, each with its model.

Sync workers because inference is CPU-bound and holds the GIL: one request per process at a
time, one process per CPU, and gunicorn's ``timeout`` then bounds each request (a worker stuck
longer is killed and replaced). The master handles SIGTERM: it stops accepting, lets workers
finish their requests for up to GRACEFUL_TIMEOUT_SECONDS, and exits 0.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from gunicorn.app.base import BaseApplication

from serving import constants as C
from serving.app import create_app
from serving.config import ServeConfig
from serving.handlers import load_handlers

log = logging.getLogger(__name__)

WORKER_READY_LOG = "worker %d: model loaded from %s (hooks: %s)"
SHM_DIR = "/dev/shm"  # gunicorn's heartbeat files: keep them off the container's overlay disk


def gunicorn_options(config: ServeConfig) -> dict[str, Any]:
    """Every gunicorn setting we rely on, explicit (gunicorn reads no config file or env here)."""
    return {
        "bind": [f"{C.BIND_HOST}:{config.port}"],
        "workers": config.workers,
        "worker_class": "sync",
        "timeout": config.timeout,
        "graceful_timeout": min(C.GRACEFUL_TIMEOUT_SECONDS, config.timeout),
        "preload_app": False,  # each worker runs model_fn itself, after the fork
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "serve",
        "control_socket_disable": True,  # no runtime-control socket in $HOME
        "worker_tmp_dir": SHM_DIR if os.path.isdir(SHM_DIR) else None,
    }


def build_worker_app(config: ServeConfig) -> Any:
    """Run in each worker before it accepts traffic: hooks, model_fn, then the WSGI app."""
    handlers = load_handlers(config)
    model = handlers.model_fn(str(config.model_dir))
    log.info(WORKER_READY_LOG, os.getpid(), config.model_dir, handlers.source)
    return create_app(config, handlers, model)


class ServeApplication(BaseApplication):
    def __init__(self, config: ServeConfig) -> None:
        self._config = config
        super().__init__(prog="serve")

    def load_config(self) -> None:
        for key, value in gunicorn_options(self._config).items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return build_worker_app(self._config)
