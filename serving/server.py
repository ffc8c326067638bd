"""gunicorn, configured in code: a master that forks one worker per CPU, each with its model.

Behind nginx (the default, see serving/nginx.py and serving/supervisor.py) the workers are
gthread workers, each on a unix socket of its own: nginx hands them only whole requests and
balances them across the workers. A worker runs one request at a time by default
(``SERVING_THREADS=1``): the model's work is CPU-bound under one GIL, and requests run side by
side share the CPU in a random order, which doubled the tail at concurrency 8 with 16 threads
(in turn, each waits only for those that came before it). /ping does not queue behind them: a
thread of its own in each worker answers it on a second socket (serving/ping.py). gthread's own
timeout only watches the worker's main loop, so a watchdog thread enforces
SAGEMAKER_MODEL_SERVER_TIMEOUT per request: a request running longer loses its worker (nginx
has answered 504 by then), as with sync workers.

Without nginx (``SERVING_PROXY=none``, the old arrangement kept for the benchmark) they are sync
workers on the TCP port: one request per process, and gunicorn's ``timeout`` bounds each.

The master handles SIGTERM: it stops accepting, lets workers finish their requests for up to
GRACEFUL_TIMEOUT_SECONDS, and exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from serving import constants as C
from serving import ping
from serving.app import create_app
from serving.config import ServeConfig
from serving.handlers import load_handlers

log = logging.getLogger(__name__)

WORKER_READY_LOG = "worker %d: model loaded from %s (hooks: %s)"
# Behind nginx a worker takes requests and pings only from here on (WorkerSockets.publish).
WORKER_PUBLISHED_LOG = "worker %d: taking requests and pings on slot %d"
WORKER_TIMEOUT_LOG = "WORKER TIMEOUT: worker %d: a request has run for %.0f s (%s=%d); restarting the worker"
SHM_DIR = "/dev/shm"  # gunicorn's heartbeat files: keep them off the container's overlay disk
WATCHDOG_INTERVAL_SECONDS = 0.5
WATCHDOG_EXIT_CODE = 1  # any code but gunicorn's boot/app-load errors (3, 4): the master starts a new worker


def gunicorn_options(config: ServeConfig, sockets: WorkerSockets | None = None) -> dict[str, Any]:
    """Every gunicorn setting we rely on, explicit (gunicorn reads no config file or env here).

    With ``sockets`` (behind nginx): gthread workers, each on its own sockets; else sync
    workers on the port.
    """
    options = {
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
    if sockets is not None:
        watchdog = RequestWatchdog(config.timeout)

        def worker_ready(worker: Any) -> None:  # gunicorn's post_worker_init: the model is loaded
            watchdog.start(worker)
            sockets.publish(worker)

        options.update(
            bind=[f"unix:{path}" for path in sockets.bound],
            pre_fork=sockets.assign,
            post_fork=sockets.keep_only_own,
            child_exit=sockets.withdraw,
            nworkers_changed=sockets.keep_count,
            worker_class="gthread",
            threads=config.threads,
            keepalive=C.UPSTREAM_KEEPALIVE_SECONDS,  # nginx reuses its connections (serving/nginx.py)
            post_worker_init=worker_ready,
            pre_request=watchdog.request_started,
            post_request=watchdog.request_finished,
        )
    return options


@dataclass(frozen=True)
class WorkerSockets:
    """A request socket and a ping socket per worker slot, so nginx can balance across workers.

    On one shared socket, nginx's kept-alive upstream connections stay with whichever worker
    accepted them, and one worker often holds most requests in flight while the other idles.
    With a socket per worker, nginx's ``least_conn`` sends each request to the worker with the
    fewest in flight. gunicorn has no per-worker bind, hence these hooks (hand-written: no
    library does this):

    - the arbiter binds every slot's request socket under a name nginx does not know
      (``bound``); a new worker takes the lowest slot no live worker holds and stops listening
      on the others;
    - once its model is loaded, the worker links its socket under the name nginx connects to
      (``requests``) and starts its ping thread (``ping``);
    - when it exits, the arbiter removes both names, so nginx, failing to connect, sends requests
      and pings to the other workers until the replacement has loaded its model (a socket the
      kernel accepts on would hold them there for the whole load);
    - the number of workers is fixed: SIGTTIN/SIGTTOU would leave two workers on one slot and
      another slot without one.
    """

    bound: tuple[str, ...]
    requests: tuple[str, ...]
    ping: tuple[str, ...]

    @classmethod
    def in_folder(cls, folder: Path, workers: int) -> WorkerSockets:
        def names(prefix: str) -> tuple[str, ...]:
            return tuple(str(folder / f"{prefix}-{slot}.sock") for slot in range(workers))

        return cls(names("bound"), names("worker"), names("ping"))

    def assign(self, arbiter: Any, worker: Any) -> None:  # gunicorn's pre_fork, in the arbiter
        taken = {getattr(w, "socket_slot", None) for w in arbiter.WORKERS.values()}
        free = [slot for slot in range(len(self.bound)) if slot not in taken]
        # None free only in a reload (SIGHUP), which starts the new workers before it stops the
        # old ones: consecutive ages spread them over the slots, each shared until the old leaves.
        worker.socket_slot = free[0] if free else worker.age % len(self.bound)

    def keep_only_own(self, arbiter: Any, worker: Any) -> None:  # gunicorn's post_fork, in the worker
        worker.sockets = [worker.sockets[worker.socket_slot]]

    def publish(self, worker: Any) -> None:  # from gunicorn's post_worker_init: the model is loaded
        slot = worker.socket_slot
        staged = f"{self.requests[slot]}.new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)
        os.symlink(self.bound[slot], staged)
        os.replace(staged, self.requests[slot])  # atomic: nginx sees the old name or the new one
        ping.start(self.ping[slot])
        log.info(WORKER_PUBLISHED_LOG, os.getpid(), slot)

    def withdraw(self, arbiter: Any, worker: Any) -> None:  # gunicorn's child_exit, in the arbiter
        if any(w.socket_slot == worker.socket_slot for w in arbiter.WORKERS.values()):
            return  # a reload's new worker holds the slot already
        for path in (self.requests[worker.socket_slot], self.ping[worker.socket_slot]):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def keep_count(self, arbiter: Any, new: int, old: int | None) -> None:  # nworkers_changed
        if old is not None and new not in (old, len(self.bound)):
            log.warning("serve runs %d workers, one per socket: SIGTTIN/SIGTTOU ignored", len(self.bound))
            arbiter._num_workers = old  # the property's setter would call this hook again


class RequestWatchdog:
    """Per-worker: the start time of each running request; a thread ends the worker when one
    has run past the timeout (a thread cannot be stopped, a process can)."""

    def __init__(self, timeout: int) -> None:
        self._timeout = timeout
        self._started: dict[int, float] = {}  # thread id -> monotonic start

    def request_started(self, worker: Any, req: Any) -> None:
        self._started[threading.get_ident()] = time.monotonic()

    def request_finished(self, worker: Any, req: Any, environ: Any, resp: Any) -> None:
        self._started.pop(threading.get_ident(), None)

    def start(self, worker: Any) -> None:
        threading.Thread(target=self._watch, name="request-watchdog", daemon=True).start()

    def _watch(self) -> None:
        while True:
            time.sleep(WATCHDOG_INTERVAL_SECONDS)
            now = time.monotonic()
            oldest = min(list(self._started.values()), default=now)  # list(): one step under the GIL
            if now - oldest > self._timeout:
                log.error(WORKER_TIMEOUT_LOG, os.getpid(), now - oldest, C.ENV_TIMEOUT, self._timeout)
                logging.shutdown()
                os._exit(WATCHDOG_EXIT_CODE)


def build_worker_app(config: ServeConfig) -> Any:
    """Run in each worker before it accepts traffic: hooks, model_fn, then the WSGI app."""
    handlers = load_handlers(config)
    model = handlers.model_fn(str(config.model_dir))
    log.info(WORKER_READY_LOG, os.getpid(), config.model_dir, handlers.source)
    return create_app(config, handlers, model)


class ServeApplication(BaseApplication):
    def __init__(self, config: ServeConfig, sockets: WorkerSockets | None = None) -> None:
        self._config = config
        self._sockets = sockets
        super().__init__(prog="serve")

    def load_config(self) -> None:
        for key, value in gunicorn_options(self._config, self._sockets).items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return build_worker_app(self._config)
