"""Run this job's trials one at a time with Optuna's ask-and-tell interface.

``study.optimize`` would lose a finished trial if the database dropped during its final
``tell``, and its heartbeat thread dies on the first database error. This loop retries every
storage call through an outage, keeps the heartbeat alive, re-queues a trial ended by SIGTERM,
records why a trial failed, and stops after too many failures in a row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from core.errors import UserError
from entrypoint.job.context import JobContext
from entrypoint.job.stopping import StopRequested
from entrypoint.model.checkpoint import Progress
from entrypoint.study.heartbeat import HeartbeatStorage
from entrypoint.study.join import fail_stale_trials
from hpo_study import optuna_private
from hpo_study.constants import ATTR_FAIL_REASON
from hpo_study.database.dberrors import describe, is_transient
from hpo_study.database.redact import scrub

logger = logging.getLogger(__name__)
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


class Heartbeat:
    """Optuna's heartbeat for this job's running trial: one thread for the whole job, which
    survives a database outage.

    A trial's first beat comes within one interval of its start, so trials shorter than that
    never write one (the stale sweep also fails RUNNING trials without beats:
    storage.HeartbeatStorage). After a failed beat the next try comes sooner, so that a trial
    beats again as soon as the database is back.
    """

    RETRY_S = 5.0

    def __init__(self, storage: optuna.storages.RDBStorage, interval: float) -> None:
        self._storage, self._interval = storage, interval
        self._trial_id: int | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # No join: the thread ends at its next wake-up, and a last beat for a finished trial
        # is harmless (the sweep looks at RUNNING trials only).
        self._done.set()

    @contextlib.contextmanager
    def beating(self, trial_id: int) -> Iterator[None]:
        """Beat for this trial while the block runs."""
        self._trial_id = trial_id
        try:
            yield
        finally:
            self._trial_id = None

    def _beat(self) -> None:
        wait = self._interval
        while not self._done.wait(wait):
            trial_id, wait = self._trial_id, self._interval
            if trial_id is None:
                continue
            try:
                self._storage.record_heartbeat(trial_id)
            except Exception as exc:  # keep beating: the main thread deals with the outage
                logger.warning("Heartbeat of trial id %d not recorded: %s", trial_id, describe(exc))
                logger.debug("The heartbeat's error", exc_info=exc)
                wait = min(self._interval, self.RETRY_S)


@dataclasses.dataclass
class Outcome:
    number: int
    state: TrialState
    reason: str | None = None
    interrupted: bool = False


@dataclasses.dataclass
class _Ended:
    """How the objective ended a trial, before the study is told."""

    state: TrialState = TrialState.COMPLETE
    value: float | None = None
    reason: str | None = None  # why it failed (recorded as the trial's fail_reason)
    interrupted: bool = False  # SIGTERM: re-queued
    taken_over: bool = False  # another job's stale sweep ended it first


Callback = Callable[[optuna.Study, FrozenTrial], None]


class TrialRunner:
    """Runs trials of one study for one job."""

    def __init__(
        self,
        job: JobContext,
        study: optuna.Study,
        storage: optuna.storages.RDBStorage,
        objective: Callable[[optuna.Trial], float],
        progress: Progress,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.job, self.study, self.storage, self.objective = job, study, storage, objective
        self.progress, self.callbacks = progress, list(callbacks)
        self.settings, self.guard, self._retry = job.settings, job.guard, job.retry
        self._stale_checked_at = time.monotonic()  # storage.join_study swept at the start
        self._heartbeat: Heartbeat | None = None
        self.ran = 0  # trials this job ran to an end (interrupted ones are not counted)
        self.states: dict[str, int] = {}  # how they ended: state name -> count
        self.last_failure: str | None = None
        self.stopped_in_outage = False  # SIGTERM came while the database was away
        self._trial: optuna.Trial | None = None  # the trial in progress, for the log

    def run(self) -> int:
        """Run up to the remaining budget; return how many trials this call finished."""
        try:
            with Heartbeat(self.storage, self.settings.heartbeat_interval) as self._heartbeat:
                return self._run()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if self.guard.stopping:  # SIGTERM during an outage: a stop, not a failure
                self.stopped_in_outage = True
                logger.warning("Stopping on SIGTERM while the database is away: %s", describe(exc))
                if self._trial is not None:
                    logger.warning(
                        "Not written to the study: the end of trial %d, which stays RUNNING until "
                        "a job's stale-trial sweep fails and re-queues it (after heartbeat-grace-period)",
                        self._trial.number,
                    )
                logger.debug("The database's error", exc_info=exc)
                return 0
            raise UserError(
                f"The database was unreachable for longer than db-retry-timeout "
                f"({self.settings.db_retry_timeout:g} s): {describe(exc)}"
            ) from exc
        finally:
            self._heartbeat = None

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
                n = self._retry(
                    lambda: len(self.study.get_trials(deepcopy=False, states=FINISHED_STATES)),
                    "counting trials",
                )
                if n >= s.max_trials:
                    logger.info("Study has %d finished trials (max-trials %d): stopping", n, s.max_trials)
                    self._settle_running()
                    break
            outcome = self.run_one()
            if outcome.interrupted:
                break
            done += 1
            self.ran += 1
            self.states[outcome.state.name] = self.states.get(outcome.state.name, 0) + 1
            self.progress.record(outcome.number)
            if outcome.state == TrialState.FAIL:
                self.last_failure = outcome.reason or "unknown"
                failures += 1
                if failures >= s.max_consecutive_failures:
                    raise UserError(
                        f"{failures} trials failed in a row (max-consecutive-failures); "
                        f"last: {outcome.reason or 'unknown'}"
                    )
            else:
                failures = 0
        return done

    def _settle_running(self) -> None:
        """The study's budget is met: no job will sweep it after this one. Wait until no RUNNING
        trial is left whose heartbeats lapsed (a dead job's), failing them once they are stale;
        trials that go on beating belong to live jobs, which end them. A recent beat may be the
        last of a job killed a moment ago: such a trial counts as live only once its beat moves
        on, else it lapses. Bounded by interval + grace period (+ one interval), and ended by
        SIGTERM."""
        s = self.settings
        if not isinstance(self.storage, HeartbeatStorage):
            return
        storage = self.storage
        study_id = self._retry(
            lambda: storage.get_study_id_from_name(self.study.study_name), "reading the study"
        )
        lapse_s = 1.5 * s.heartbeat_interval + 1  # a live job beats every interval
        deadline = time.monotonic() + s.heartbeat_interval * 2 + s.heartbeat_grace_period
        first_beats: dict[int, object] = {}  # a RUNNING trial's recent beat when first seen
        while True:
            self._retry(lambda: fail_stale_trials(self.study), "failing stale trials")
            lapsed, recent = self._retry(
                lambda: storage.running_beats(study_id, lapse_s), "reading heartbeats"
            )
            unsure = [tid for tid, beat in recent.items() if first_beats.setdefault(tid, beat) == beat]
            if not lapsed and not unsure:
                return
            if time.monotonic() >= deadline:
                logger.warning("Trials %s still RUNNING without heartbeats; leaving them", lapsed or unsure)
                return
            if lapsed:
                logger.info("Waiting for trials %s, whose heartbeats lapsed, to become stale", lapsed)
            else:
                logger.info("Waiting to see whether trials %s still beat", unsure)
            if self.guard.stop.wait(min(s.heartbeat_interval, max(deadline - time.monotonic(), 0))):
                return

    def _requeue_interrupted(self, trial: FrozenTrial) -> None:
        self.study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                system_attrs={"failed_trial": trial.system_attrs.get("failed_trial", trial.number)},
            )
        )

    def _finish(self, trial: optuna.Trial, ended: _Ended) -> TrialState | None:
        """Record why the trial failed and tell the study; return the state the study holds,
        None if another job ended the trial first."""
        try:
            if ended.reason is not None:
                reason = ended.reason
                self._retry(lambda: trial.set_user_attr(ATTR_FAIL_REASON, reason), "recording a failure")
            # What optimize() does: study.tell() would read the whole trial back from the
            # database once more, a read per trial that only the callbacks need. A retry after a
            # dropped connection gets the state the database holds, as does a trial that another
            # job ended meanwhile.
            value = ended.value if ended.state == TrialState.COMPLETE else None
            return self._retry(
                lambda: optuna_private.tell(self.study, trial, value, ended.state), "finishing a trial"
            )
        except optuna.exceptions.UpdateFinishedTrialError:
            return None

    def run_one(self) -> Outcome:
        """Ask for a trial, run the objective on it while it beats, tell the study, settle it."""
        self._sweep_if_due()
        with warnings.catch_warnings():
            # ask() warns that heartbeats are meant for optimize(): this loop is our optimize().
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
            trial: optuna.Trial = self._retry(self.study.ask, "starting a trial")
        logger.info("Trial %d started", trial.number)
        assert self._heartbeat is not None, "run_one() runs inside run()"
        self._trial = trial
        with self._heartbeat.beating(optuna_private.trial_id(trial)):
            ended = self._evaluate(trial)
            # Still beating: a tell retried through an outage keeps the trial alive.
            told = None if ended.taken_over else self._finish(trial, ended)
        self._trial = None
        return self._settle(trial, ended, told)

    def _sweep_if_due(self) -> None:
        """Fail stale trials of dead jobs. Staleness moves on the scale of the grace period: look
        once per heartbeat interval, not before every trial as optimize() does (a query per trial)."""
        if time.monotonic() - self._stale_checked_at >= self.settings.heartbeat_interval:
            self._retry(lambda: fail_stale_trials(self.study), "failing stale trials")
            self._stale_checked_at = time.monotonic()

    def _evaluate(self, trial: optuna.Trial) -> _Ended:
        """Run the objective within the trial's time limit and say how it ended; a database that
        stayed away longer than db-retry-timeout propagates."""
        try:
            with self.guard.trial(self.settings.trial_timeout):
                value = self.objective(trial)
        except optuna.TrialPruned:
            return _Ended(TrialState.PRUNED)
        except StopRequested as exc:
            return _Ended(TrialState.FAIL, reason=f"interrupted: {exc}", interrupted=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            return _Ended(taken_over=True)
        except Exception as exc:
            if is_transient(exc):
                raise
            reason = scrub(f"{type(exc).__name__}: {exc}")[:1000]
            logger.warning(
                "Trial %d failed: %s", trial.number, reason, exc_info=not isinstance(exc, ArithmeticError)
            )
            return _Ended(TrialState.FAIL, reason=reason)
        if value is None or not math.isfinite(value):
            return _Ended(TrialState.FAIL, value, f"objective returned {value}")
        return _Ended(TrialState.COMPLETE, value)

    def _settle(self, trial: optuna.Trial, ended: _Ended, told: TrialState | None) -> Outcome:
        """After the tell: a trial another job ended is left to it, an interrupted one is
        re-queued, and the callbacks see the trial as stored."""
        # Another job's stale sweep ended the trial first: its heartbeats lapsed (a long database
        # outage) and the sweeper re-queued its parameters. This job moves on.
        taken_over = told != ended.state
        requeue = ended.interrupted and not taken_over  # a taken-over trial is re-queued already
        frozen: FrozenTrial | None = None
        if taken_over or requeue or self.callbacks:
            tid = optuna_private.trial_id(trial)
            frozen = self._retry(lambda: self.storage.get_trial(tid), "reading the trial")
        if taken_over:
            told = frozen.state
            logger.warning(
                "Trial %d was ended by another job (%s) after its heartbeats lapsed; it is re-queued there",
                trial.number,
                told.name,
            )
        if requeue:
            # Queue the same parameters again (not Optuna's retry callback: it would copy the
            # user attributes, fail_reason included, and share its retry budget).
            self._retry(lambda: self._requeue_interrupted(frozen), "re-queueing the interrupted trial")
            logger.info("Trial %d interrupted and re-queued", trial.number)
        elif told == TrialState.COMPLETE:
            logger.info(
                "Trial %d finished with value %s and parameters %s", trial.number, ended.value, trial.params
            )
        elif ended.interrupted:
            logger.info("Trial %d interrupted", trial.number)
        else:
            logger.info("Trial %d %s", trial.number, told.name.lower())
        for callback in self.callbacks:
            callback(self.study, frozen)
        return Outcome(trial.number, told, ended.reason, ended.interrupted)
