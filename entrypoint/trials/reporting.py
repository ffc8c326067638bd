"""Each epoch's metrics -> a metric line, the Optuna trial, and the pruner's verdict.

Written here because optuna-integration 5 dropped its Chainer extension (and the objective no
longer runs Chainer's Trainer). The median pruner is Optuna's rule (``MedianPruner``) over
trials read once each (trialdb.CompletedValues), so that one epoch's report-and-prune costs
the same in a study of 50 trials as in one of 5,000, and the trial's own values are written
once, when it ends; any other pruner gets Optuna's own path (a write per epoch).

To add a pruner, add its factory to :data:`PRUNERS`: the 'pruner' hyperparameter accepts exactly
these names (settings.py reads the table).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from hpo_study import optuna_private, trialdb
from hpo_study.database.dberrors import direct

# The metric line's fields, in order (the README's metric_definitions read them).
LINE_KEYS = ("main/loss", "main/accuracy", "validation/main/loss", "validation/main/accuracy")


def field_name(key: str) -> str:
    """``validation/main/accuracy`` -> ``validation_accuracy`` (metric lines, user attributes)."""
    return key.replace("main/", "").replace("/", "_")


class MedianPruner(optuna.pruners.BasePruner):
    """Optuna's ``MedianPruner(n_startup_trials, n_warmup_steps)`` with ``interval_steps=1`` and
    ``n_min_trials=1``: prune when the trial's best value so far is worse than the median of the
    completed trials at the same step. Completed trials are read incrementally, and their
    values kept sorted per step, instead of scanning the whole study at every epoch.
    """

    def __init__(self, n_startup_trials: int = 5, n_warmup_steps: int = 0) -> None:
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self._completed: dict[int, trialdb.CompletedValues] = {}  # per study id

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return self.decide(study, trial.intermediate_values)

    def decide(self, study: optuna.Study, values: Mapping[int, float]) -> bool:
        """The verdict for a trial whose intermediate values so far are ``values``."""
        completed = self._completed.setdefault(optuna_private.study_id(study), trialdb.CompletedValues())
        completed.refresh(study)
        if completed.n_complete == 0 or completed.n_complete < self.n_startup_trials or not values:
            return False
        step = max(values)
        if step < self.n_warmup_steps:
            return False
        maximize = study.direction == StudyDirection.MAXIMIZE
        finite = [v for v in values.values() if not math.isnan(v)]
        if not finite:
            return True
        best = max(finite) if maximize else min(finite)
        if completed.count(step) < 1:
            return False
        median = completed.percentile(step, 50.0)
        if math.isnan(median):
            return False
        return best < median if maximize else best > median


# name -> the pruner, given the epochs per trial, a trial's full resource (default: Settings.pruner).
MEDIAN_STARTUP_TRIALS = 4  # completed trials before the median pruner prunes anything

PRUNERS: dict[str, Callable[[int], optuna.pruners.BasePruner]] = {
    "none": lambda epochs: optuna.pruners.NopPruner(),
    # Optuna's median rule, reading each finished trial once (flat in the study's size). Four
    # trials before the first verdict, not Optuna's five: on the digits (benchmarks/pruning.py,
    # seeds 0-6) 47-56% fewer epochs instead of 38-42%, best accuracy within 0.3 points.
    "median": lambda epochs: MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=1),
    "hyperband": lambda epochs: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs),
}


class EpochReporter:
    """Once per epoch: print a metric line, report the objective to the trial, maybe prune."""

    def __init__(
        self,
        trial: optuna.Trial,
        metric_key: str,
        emit: Callable[[str], None] = print,
        db: Callable[[Callable[[], Any], str], Any] = direct,
    ) -> None:
        self._db = db  # wraps storage calls, e.g. to wait through a database outage
        self._trial = trial
        self._metric_key = metric_key
        self._emit = emit
        self._values: dict[int, float] = {}
        self.pending: dict[int, float] = {}  # intermediate values for the caller to record
        self.last: dict[str, float] = {}  # the last epoch's entry (Chainer-style keys, and "epoch")

    def __call__(self, epoch: int, entry: Mapping[str, float]) -> None:
        self.last = {"epoch": float(epoch), **{k: float(v) for k, v in entry.items()}}
        fields = " ".join(f"{field_name(key)}={float(entry[key]):.6g}" for key in LINE_KEYS if key in entry)
        self._emit(f"trial={self._trial.number} epoch={epoch} {fields}")
        loss = float(entry.get("main/loss", 0.0))
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss} at epoch {epoch} (diverged)")
        if self._metric_key not in entry:
            raise KeyError(f"metric {self._metric_key} missing from the epoch report")
        value = float(entry[self._metric_key])
        if not math.isfinite(value):
            raise FloatingPointError(f"{self._metric_key} is {value} at epoch {epoch}")
        self._values[epoch] = value
        if self._should_prune(epoch, value):
            raise optuna.TrialPruned(f"pruned at epoch {epoch} with {self._metric_key}={value:.6g}")

    def _should_prune(self, epoch: int, value: float) -> bool:
        trial, pruner = self._trial, self._trial.study.pruner
        if isinstance(pruner, (MedianPruner, optuna.pruners.NopPruner)):
            # Our values stay here until the trial ends (Objective writes them with its metrics,
            # before the trial is told finished): the median rule reads completed trials only.
            self.pending[epoch] = value
            if isinstance(pruner, optuna.pruners.NopPruner):
                return False
            return self._db(lambda: pruner.decide(trial.study, self._values), "asking the pruner")
        self._db(lambda: trial.report(value, step=epoch), "reporting an epoch")
        return self._db(trial.should_prune, "asking the pruner")
