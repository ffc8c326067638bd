"""`serve` behind nginx: this process starts gunicorn and nginx, watches both, and stops both.

- gunicorn is forked from this process after the preflight, so its workers inherit the
  imported user module and libraries (no second import of Chainer); its workers listen on
  unix sockets in a private run folder, one per worker (serving.server.WorkerSockets).
- nginx runs in the foreground on the port, from a config written into that folder.
- Either one exiting ends the other and `serve` (exit 1): a half-alive server would pass no
  request or answer /ping falsely.
- SIGTERM (or SIGINT): nginx first (SIGQUIT: it stops listening and finishes the requests it
  holds, which gunicorn still serves), then gunicorn (SIGTERM: its graceful stop); exit 0 when
  both stopped cleanly, all before SageMaker's SIGKILL 30 s after its SIGTERM.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from serving import constants as C
from serving import nginx
from serving.config import ServeConfig
from serving.server import ServeApplication, WorkerSockets

log = logging.getLogger(__name__)

STOP_DEADLINE_SECONDS = C.GRACEFUL_TIMEOUT_SECONDS + 3  # then SIGKILL, still before SageMaker's at 30 s
POLL_SECONDS = 0.1


class Supervisor:
    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.nginx_binary = nginx.nginx_binary()
        self.run_dir = Path(tempfile.mkdtemp(prefix="serve-"))
        self.run_dir.chmod(0o755)  # nginx's workers run as nobody when started as root
        self.sockets = WorkerSockets.in_folder(self.run_dir, config.workers)
        self.children: dict[int, str] = {}  # pid -> "gunicorn" / "nginx"
        self.stopping = False

    def run(self) -> int:
        """Start both, wait; the exit code of `serve`."""
        # Before the fork: a SIGTERM from now on is handled (gunicorn installs its own handlers in
        # its process as it starts).
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_stop_signal)
        try:
            self._start_gunicorn()
            conf = nginx.write_config(self.config, self.run_dir, self.sockets)
            pid = os.posix_spawn(
                self.nginx_binary, nginx.command(self.nginx_binary, self.run_dir, conf), os.environ
            )
            self.children[pid] = "nginx"
            return self._wait()
        finally:
            self._kill_all()
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _start_gunicorn(self) -> None:
        pid = os.fork()
        if pid == 0:  # the child becomes the gunicorn master and never returns here
            code = 1
            # Not the supervisor's handlers: a stop signal before gunicorn installs its own ends it.
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            try:
                ServeApplication(self.config, self.sockets).run()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                log.exception("gunicorn failed")
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = "gunicorn"

    def _on_stop_signal(self, signum: int, frame: object) -> None:
        if not self.stopping:
            log.info("%s: stopping nginx, then gunicorn", signal.Signals(signum).name)
            self.stopping = True
            self._signal("nginx", signal.SIGQUIT)  # graceful: stop listening, finish what it holds

    def _signal(self, name: str, signum: int) -> None:
        for pid, child in self.children.items():
            if child == name:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass

    def _wait(self) -> int:
        """Until both have exited; the first unexpected exit stops the other."""
        code = 0
        deadline: float | None = None
        while self.children:
            if self.stopping and deadline is None:
                deadline = time.monotonic() + STOP_DEADLINE_SECONDS
                self._signal("nginx", signal.SIGQUIT)  # again: the signal may have come before nginx started
            if deadline is not None and time.monotonic() > deadline:
                log.error("gunicorn and nginx did not stop within %d s: killing them", STOP_DEADLINE_SECONDS)
                self._kill_all()
                return 1
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(
                    POLL_SECONDS
                )  # short, and a signal wakes it; waitpid(-1, 0) would not see the deadline
                continue
            name = self.children.pop(pid, None)
            if name is None:
                continue
            exit_code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                if name == "nginx":
                    self._signal("gunicorn", signal.SIGTERM)
                if exit_code != 0:
                    log.warning("%s exited with %d while stopping", name, exit_code)
                    code = 1
            else:
                log.error("%s exited with %d: stopping serve", name, exit_code)
                code = 1
                self.stopping = True
                self._signal("nginx", signal.SIGQUIT)
                self._signal("gunicorn", signal.SIGTERM)
        return code

    def _kill_all(self) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.children.clear()


def run(config: ServeConfig) -> None:
    sys.exit(Supervisor(config).run())
