"""Optuna's gRPC storage proxy between the hosts of one job (instance_count > 1, embedded study).

The leader host keeps the study in its embedded storage (SQLite) and serves it with Optuna's own
proxy server; every host, the leader too, runs its trials through Optuna's own client
(``GrpcStorageProxy``). What Optuna's proxy lacks is added here, and only that:

- Heartbeats. The proxy has no heartbeat call. A client sends a trial's beat as a trial system
  attribute under :data:`HEARTBEAT_KEY`, which the served storage records as Optuna's own
  heartbeat (``record_heartbeat``), and nothing else. A thread on the leader runs Optuna's
  stale-trial sweep every heartbeat interval: the running trial of a host that died or stopped
  is failed after the grace period and re-queued (``RetryHeartbeatStaleTrialCallback``), and
  another host runs it.
- One writer. The servicer's threads call the storage one at a time (SQLite has one writer;
  threads racing for it would meet "database is locked").
- Time limits. Optuna's client waits for ever on a leader that stopped; here every call has a
  deadline, and a leader that does not answer raises
  :class:`~hpo_study.database.dberrors.StorageUnreachable` naming the leader, which the job retries for
  db-retry-timeout like a database outage, then fails with that line.

The server listens on the job's own address (hosts.bind_address), never on all interfaces, and
only while the job runs: it stops when the job ends, and dies with the process.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import optuna
import sqlalchemy

from core.errors import UserError
from entrypoint.study.join import fail_stale_trials
from hpo_study import optuna_private
from hpo_study.database.dberrors import StorageUnreachable, describe

logger = logging.getLogger(__name__)

HEARTBEAT_KEY = "sagemaker-optuna:heartbeat"  # a trial system attribute the server records as a heartbeat
SERVER_THREADS = 16  # calls in flight at once (they are served one at a time; the rest wait)
MAX_CALL_TIMEOUT_S = 30.0  # a call's deadline: this, or a third of db-retry-timeout when shorter
STOPPING_CALL_TIMEOUT_S = 10.0  # after SIGTERM, at most this: SageMaker's SIGKILL comes 120 s after it
STOP_GRACE_S = 2.0
RECONNECT_MAX_MS = 2000  # the longest wait between two attempts to reach the leader  # calls in flight when the server stops get this long to finish
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
FAILED_MARK = (
    "sagemaker-optuna:leader-failed:"  # in the details of every call answered after the leader failed
)
MAX_FAILED_LINGER_S = 30.0  # a failed leader answers "failed" this long, at most, before it exits


class LeaderFailed(Exception):
    """Raised by the served storage once the leader has failed: every host's next call fails."""


def call_timeout(db_retry_timeout: float) -> float:
    """A call's deadline: a stopped leader is noticed well within db-retry-timeout."""
    return max(1.0, min(MAX_CALL_TIMEOUT_S, db_retry_timeout / 3))


class _Served:
    """The leader's study storage as the proxy serves it: one call at a time, beats recorded as
    Optuna's heartbeats. Everything else is the storage's own method."""

    def __init__(self, backend: optuna.storages.BaseStorage, lock: threading.Lock) -> None:
        self._backend, self._lock = backend, lock
        self.failure: str | None = None  # set when the leader fails: every call answers it

    def _check(self) -> None:
        if self.failure is not None:
            raise LeaderFailed(FAILED_MARK + self.failure)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._backend, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._check()
            with self._lock:
                return attr(*args, **kwargs)

        return call

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._check()
        with self._lock:
            if key == HEARTBEAT_KEY:
                self._backend.record_heartbeat(trial_id)
            else:
                self._backend.set_trial_system_attr(trial_id, key, value)


def _no_fsync(study: optuna.Study) -> None:
    """The served SQLite study commits without fsync (``PRAGMA synchronous=OFF``).

    Every host's writes go through this one file: with an fsync per commit (SQLite's default)
    they queued on the disk, 220 ms per trial against 43 ms without, measured on this project's
    development VM. A commit still reaches the operating system before the call returns, so the
    study survives the process being killed; only the machine itself crashing could lose or
    damage the last commits, and then the job is lost anyway.
    """
    rdb = optuna_private.rdb_of(study)
    if rdb is None or optuna_private.engine(rdb).dialect.name != "sqlite":
        return
    engine = optuna_private.engine(rdb)

    @sqlalchemy.event.listens_for(engine, "connect")
    def _on_connect(conn: Any, record: Any) -> None:
        conn.execute("PRAGMA synchronous=OFF")

    engine.dispose()  # connections opened before the listener: closed, the next ones get it


class ProxyServer:
    """The leader's study, served to the job's hosts on ``address:port`` while the job runs."""

    def __init__(self, study: optuna.Study, address: str, port: int, sweep_every_s: float) -> None:
        self.study, self.address, self.port = study, address, port
        self._sweep_every_s = sweep_every_s
        self.lock = threading.Lock()  # also held by the leader's own direct reads (the report)
        self._server: Any = None
        self._served: _Served | None = None
        self._done = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep, name="proxy-stale-sweep", daemon=True)

    def __enter__(self) -> ProxyServer:
        _no_fsync(self.study)
        served = self._served = _Served(optuna_private.storage_of(self.study), self.lock)
        self._server = optuna_private.grpc_server(
            served, self.address, self.port, ThreadPoolExecutor(SERVER_THREADS, thread_name_prefix="proxy")
        )
        self._server.start()
        self._sweeper.start()
        logger.info(
            "Serving study '%s' to the job's hosts on %s:%d", self.study.study_name, self.address, self.port
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._server.stop(STOP_GRACE_S).wait()
        logger.info("Study proxy on %s:%d stopped", self.address, self.port)

    def fail(self, reason: str, linger_s: float) -> None:
        """The leader failed: answer every host's call with ``reason`` for ``linger_s`` (so that
        the workers fail at once quoting it, instead of waiting db-retry-timeout for a proxy that
        is gone), then let the job stop the server."""
        if self._served is None:
            return
        self._served.failure = reason
        logger.info("Telling the other hosts for %.0f s that this host failed", linger_s)
        time.sleep(linger_s)

    def _sweep(self) -> None:
        """Optuna's stale-trial sweep over every host's trials (the hosts themselves cannot run
        it through the proxy)."""
        while not self._done.wait(self._sweep_every_s):
            try:
                with self.lock:
                    fail_stale_trials(self.study)
            except Exception as exc:  # keep sweeping; the hosts see the storage's errors themselves
                logger.warning("Stale-trial sweep failed: %s", describe(exc))


class _Calls:
    """Optuna's client stub with a deadline on every call; a server that does not answer raises
    StorageUnreachable naming it (other errors stay Optuna's to map)."""

    def __init__(self, stub: Any, server: str, timeout: float) -> None:
        self._stub, self._server, self._timeout = stub, server, timeout
        self.stop: threading.Event | None = None  # set after SIGTERM: shorter deadlines

    def __getattr__(self, name: str) -> Callable[[Any], Any]:
        method = getattr(self._stub, name)

        def call(request: Any) -> Any:
            try:  # wait_for_ready: a call waits (within its deadline) for the leader to come up
                timeout = self._timeout
                if self.stop is not None and self.stop.is_set():
                    timeout = min(timeout, STOPPING_CALL_TIMEOUT_S)
                return method(request, timeout=timeout, wait_for_ready=True)
            except grpc.RpcError as exc:
                details = exc.details() or ""
                if FAILED_MARK in details:
                    reason = details.split(FAILED_MARK, 1)[1]
                    raise UserError(f"{self._server} failed: {reason}") from None
                if exc.code() in _UNREACHABLE:
                    raise StorageUnreachable(
                        f"{self._server} did not answer ({exc.code().name}: {exc.details()})"
                    ) from exc
                raise

        return call


class ProxyClient(optuna_private.GrpcClient):
    """Optuna's gRPC storage client for a host of the job, talking to the leader's proxy."""

    def __init__(
        self,
        leader: str,
        port: int,
        timeout: float,
        address: str | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """``address``: where to connect when it is known (the leader's own client: the address
        its server bound, which its own host name may not resolve to), else the leader's name."""
        self.leader, self.timeout, self.stop = leader, timeout, stop
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(host=address or leader, port=port)

    @property
    def shown(self) -> str:
        return f"the study's leader host {self.leader} (port {self._port})"

    def channel_options(self) -> list[tuple[str, Any]]:
        # gRPC backs off up to 120 s between connection attempts by default: a host that
        # started before the leader would miss it for minutes.
        return [
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
        ]

    def wrap_stub(self, stub: Any) -> Any:
        calls = _Calls(stub, self.shown, self.timeout)
        calls.stop = self.stop
        return calls

    def record_heartbeat(self, trial_id: int) -> None:
        """Optuna's heartbeat, through the proxy (the server records it: :class:`_Served`)."""
        self.set_trial_system_attr(trial_id, HEARTBEAT_KEY, True)
