"""Each epoch's metrics -> a metric line, the Optuna trial, and the pruner's verdict.

Written here because optuna-integration 5 dropped its Chainer extension (and the objective no
longer runs Chainer's Trainer). How a pruner hears of an epoch is its record's ``reporting`` in
hpo_study/pruners.py: our median pruner decides from the values kept here, which are written
once, when the trial ends; any other pruner gets Optuna's own path (a write per epoch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import optuna

from hpo_study import pruners
from hpo_study.database.dberrors import direct

# The metric line's fields, in order (the README's metric_definitions read them).
LINE_KEYS = ("main/loss", "main/accuracy", "validation/main/loss", "validation/main/accuracy")


def field_name(key: str) -> str:
    """``validation/main/accuracy`` -> ``validation_accuracy`` (metric lines, user attributes)."""
    return key.replace("main/", "").replace("/", "_")


class EpochReporter:
    """Once per epoch: print a metric line, report the objective to the trial, maybe prune."""

    def __init__(
        self,
        trial: optuna.Trial,
        metric_key: str,
        emit: Callable[[str], None] = print,
        retry: Callable[[Callable[[], Any], str], Any] = direct,
    ) -> None:
        self._retry = retry  # wraps storage calls, e.g. to wait through a database outage
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
        reporting = pruners.reporting_of(pruner)
        if reporting is pruners.Reporting.PER_EPOCH:
            self._retry(lambda: trial.report(value, step=epoch), "reporting an epoch")
            return self._retry(trial.should_prune, "asking the pruner")
        # Our values stay here until the trial ends (Objective writes them with its metrics,
        # before the trial is told finished): the median rule reads completed trials only.
        self.pending[epoch] = value
        if reporting is pruners.Reporting.NEVER:
            return False
        return self._retry(lambda: pruner.decide(trial.study, self._values), "asking the pruner")
