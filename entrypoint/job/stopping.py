"""SIGTERM (stop, spot reclaim, MaxRuntime) and per-trial time limits, for the whole job.

SageMaker sends SIGTERM and kills the container 120 s later; the training toolkit neither
forwards nor handles it. We set a flag, and the training loop checks it and the trial's
deadline at every iteration, so a trial ends cleanly within one iteration. A trial stuck
inside one call is interrupted by SIGALRM when its time limit passes, or
``FORCE_STOP_AFTER_S`` after SIGTERM. The alarm repeats every ``REARM_S`` until the trial
ends: an exception raised by a signal handler is lost when it lands in a ``__del__`` or a
library's catch-all, so one shot is not enough.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator

logger = logging.getLogger(__name__)

FORCE_STOP_AFTER_S = 30.0  # SIGTERM -> forced end of a trial that does not reach an iteration
REARM_S = 10.0  # after an alarm: again only if the trial is still not over (clean-up is slow)


class Interrupted(Exception):
    """A trial was ended from outside its objective."""


class StopRequested(Interrupted):
    """The job received SIGTERM: the trial is re-queued for another (or the restarted) job."""


class TrialTimedOut(Interrupted):
    """The trial ran past the 'trial-timeout' hyperparameter."""


class Guard:
    """Owns SIGTERM and SIGALRM for the job; tells trials when to stop."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.stopped_at: float | None = None  # time.monotonic() when SIGTERM arrived
        self._in_trial = False
        self._timeout: float | None = None
        self._deadline: float | None = None

    def install(self) -> None:
        """Install the handlers (main thread only)."""
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGALRM, self._on_alarm)

    @property
    def stopping(self) -> bool:
        return self.stop.is_set()

    def check(self) -> None:
        """Called at every training iteration: end the trial cleanly if it must stop."""
        if self.stop.is_set():
            raise StopRequested("the job received SIGTERM")
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise TrialTimedOut(f"the trial ran longer than trial-timeout ({self._timeout:g} s)")

    @contextlib.contextmanager
    def trial(self, timeout: float | None) -> Iterator[None]:
        """Arm the trial's time limit for the duration of the block."""
        self._in_trial, self._timeout = True, timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        if timeout is not None:
            signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._in_trial, self._deadline = False, None

    def _on_sigterm(self, signum: int, frame: object) -> None:
        logger.warning("SIGTERM: finishing the running trial at its next iteration, then stopping")
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()
        self.stop.set()
        if self._in_trial:
            remaining = signal.getitimer(signal.ITIMER_REAL)[0]
            if remaining == 0 or remaining > FORCE_STOP_AFTER_S:
                signal.setitimer(signal.ITIMER_REAL, FORCE_STOP_AFTER_S)

    def _on_alarm(self, signum: int, frame: object) -> None:
        if not self._in_trial:
            return
        # Fire again only if this exception is lost and the trial is still running then,
        # not every second through the objective's clean-up.
        signal.setitimer(signal.ITIMER_REAL, REARM_S)
        if self.stop.is_set():
            raise StopRequested(
                f"the trial did not reach an iteration within {FORCE_STOP_AFTER_S:.0f} s of SIGTERM"
            )
        raise TrialTimedOut(f"the trial ran longer than trial-timeout ({self._timeout:g} s)")
