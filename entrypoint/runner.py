"""Run this job's trials one at a time with Optuna's ask-and-tell interface.

``study.optimize`` would lose a finished trial if the database dropped during its final
``tell``, and its heartbeat thread dies on the first database error. This loop retries every
storage call through an outage, keeps the heartbeat alive, re-queues a trial ended by SIGTERM,
records why a trial failed, and stops after too many failures in a row.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import warnings
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from entrypoint.checkpoint import Progress
from entrypoint.constants import ATTR_FAIL_REASON
from entrypoint.dberrors import describe, is_transient, retrying
from entrypoint.errors import UserError
from entrypoint.settings import Settings
from entrypoint.stopping import Guard, StopRequested

logger = logging.getLogger(__name__)
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


class Heartbeat:
    """Optuna's trial heartbeat, in a thread that survives a database outage."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: float) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        while True:
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception as exc:  # keep beating: the main thread deals with the outage
                logger.warning("Heartbeat of trial id %d not recorded: %s", self._trial_id, describe(exc))
            if self._done.wait(self._interval):
                return


@dataclasses.dataclass
class Outcome:
    trial: FrozenTrial
    interrupted: bool = False


class TrialRunner:
    """Runs trials of one study for one job."""

    def __init__(
        self,
        study: optuna.Study,
        storage: optuna.storages.RDBStorage,
        objective: Callable[[optuna.Trial], float],
        callbacks: list[Callable[[optuna.Study, FrozenTrial], None]],
        settings: Settings,
        guard: Guard,
        progress: Progress,
    ) -> None:
        self.study, self.storage, self.objective = study, storage, objective
        self.callbacks, self.settings, self.guard, self.progress = callbacks, settings, guard, progress
        self._stale_checked_at = -math.inf

    def _db(self, fn: Callable[[], object], what: str) -> object:
        return retrying(fn, self.settings.db_retry_timeout, what, self.guard.stop)

    def run(self) -> int:
        """Run up to the remaining budget; return how many trials this call finished."""
        try:
            return self._run()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if self.guard.stopping:  # SIGTERM during an outage: a stop, not a failure
                logger.warning("Stopping on SIGTERM while the database is away: %s", describe(exc))
                return 0
            raise UserError(
                f"The database was unreachable for longer than db-retry-timeout "
                f"({self.settings.db_retry_timeout:g} s): {describe(exc)}"
            ) from exc

    def _run(self) -> int:
        s = self.settings
        deadline = time.monotonic() + s.timeout if s.timeout else None
        done = failures = 0
        while len(self.progress.finished) < s.n_trials:
            if self.guard.stopping:
                logger.info("Stopping on SIGTERM after %d trials", done)
                break
            if deadline is not None and time.monotonic() >= deadline:
                logger.info("Timeout of %g s reached after %d trials", s.timeout, done)
                break
            if s.max_trials is not None:
                n = self._db(
                    lambda: len(self.study.get_trials(deepcopy=False, states=FINISHED_STATES)),
                    "counting trials",
                )
                if n >= s.max_trials:
                    logger.info("Study has %d finished trials (max-trials %d): stopping", n, s.max_trials)
                    break
            outcome = self.run_one()
            if outcome.interrupted:
                break
            done += 1
            self.progress.record(outcome.trial.number)
            if outcome.trial.state == TrialState.FAIL:
                failures += 1
                if failures >= s.max_consecutive_failures:
                    reason = outcome.trial.user_attrs.get(ATTR_FAIL_REASON, "unknown")
                    raise UserError(
                        f"{failures} trials failed in a row (max-consecutive-failures); last: {reason}"
                    )
            else:
                failures = 0
        return done

    def _requeue_interrupted(self, trial: FrozenTrial) -> None:
        self.study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                system_attrs={"failed_trial": trial.system_attrs.get("failed_trial", trial.number)},
            )
        )

    def run_one(self) -> Outcome:
        with warnings.catch_warnings():
            # fail_stale_trials is experimental; ask() warns that heartbeats are meant for
            # optimize(): this loop is our optimize(), with its own heartbeat thread.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
            # Staleness moves on the scale of the grace period: look once per heartbeat
            # interval, not before every trial as optimize() does (a query per trial).
            if time.monotonic() - self._stale_checked_at >= self.settings.heartbeat_interval:
                self._db(lambda: optuna.storages.fail_stale_trials(self.study), "failing stale trials")
                self._stale_checked_at = time.monotonic()
            trial: optuna.Trial = self._db(self.study.ask, "starting a trial")
        logger.info("Trial %d started", trial.number)
        value: float | None = None
        state, reason, interrupted = TrialState.COMPLETE, None, False
        # trial._trial_id: the storage's id of the trial; Optuna exposes no public accessor.
        with Heartbeat(self.storage, trial._trial_id, self.settings.heartbeat_interval):
            try:
                with self.guard.trial(self.settings.trial_timeout):
                    value = self.objective(trial)
                if value is None or not math.isfinite(value):
                    state, reason = TrialState.FAIL, f"objective returned {value}"
            except optuna.TrialPruned:
                state = TrialState.PRUNED
            except StopRequested as exc:
                state, reason, interrupted = TrialState.FAIL, f"interrupted: {exc}", True
            except Exception as exc:
                if is_transient(exc):
                    # The database left mid-trial and did not come back within db-retry-timeout.
                    raise
                state, reason = TrialState.FAIL, f"{type(exc).__name__}: {exc}"[:1000]
                logger.warning(
                    "Trial %d failed: %s", trial.number, reason, exc_info=not isinstance(exc, ArithmeticError)
                )
        if reason is not None:
            self._db(lambda: trial.set_user_attr(ATTR_FAIL_REASON, reason), "recording a failure")
        frozen: FrozenTrial = self._db(
            lambda: self.study.tell(
                trial, None if state != TrialState.COMPLETE else value, state=state, skip_if_finished=True
            ),
            "finishing a trial",
        )
        if interrupted:
            # Queue the same parameters again (not Optuna's retry callback: it would copy the
            # user attributes, fail_reason included, and share its retry budget).
            self._db(lambda: self._requeue_interrupted(frozen), "re-queueing the interrupted trial")
            logger.info("Trial %d interrupted and re-queued", frozen.number)
        elif state == TrialState.COMPLETE:
            logger.info(
                "Trial %d finished with value %s and parameters %s", frozen.number, value, frozen.params
            )
        else:
            logger.info("Trial %d %s", frozen.number, state.name.lower())
        for callback in self.callbacks:
            callback(self.study, frozen)
        return Outcome(frozen, interrupted)
