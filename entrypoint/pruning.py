"""Report each epoch's metrics to the Optuna trial and prune bad trials.

Written here because optuna-integration 5 dropped its Chainer extension. It reads the
epoch averages of Chainer's LogReport, so it must run after it (lower priority).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import optuna
from chainer import training

from entrypoint.dberrors import direct


class OptunaReport(training.Extension):
    """Once per epoch: print a metric line, ``trial.report`` the objective, maybe prune."""

    trigger = (1, "epoch")
    priority = training.PRIORITY_READER - 1  # after LogReport has summarised the epoch

    def __init__(
        self,
        trial: optuna.Trial,
        metric_key: str,
        log_report: str = "LogReport",
        emit: Callable[[str], None] = print,
        db: Callable[[Callable[[], Any], str], Any] = direct,
    ) -> None:
        self._db = db  # wraps storage calls, e.g. to wait through a database outage
        self._trial = trial
        self._metric_key = metric_key
        self._log_report = log_report
        self._emit = emit
        self.last: dict[str, float] = {}

    def __call__(self, trainer: training.Trainer) -> None:
        entries = trainer.get_extension(self._log_report).log
        if not entries:
            return
        entry = entries[-1]
        epoch = int(entry["epoch"])
        self.last = {k: float(v) for k, v in entry.items() if isinstance(v, (int, float))}
        fields = " ".join(
            f"{key.replace('main/', '').replace('/', '_')}={float(entry[key]):.6g}"
            for key in ("main/loss", "main/accuracy", "validation/main/loss", "validation/main/accuracy")
            if key in entry
        )
        self._emit(f"trial={self._trial.number} epoch={epoch} {fields}")
        loss = float(entry.get("main/loss", 0.0))
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss} at epoch {epoch} (diverged)")
        if self._metric_key not in entry:
            raise KeyError(f"metric {self._metric_key} missing from the epoch report")
        value = float(entry[self._metric_key])
        if not math.isfinite(value):
            raise FloatingPointError(f"{self._metric_key} is {value} at epoch {epoch}")
        self._db(lambda: self._trial.report(value, step=epoch), "reporting an epoch")
        if self._db(self._trial.should_prune, "asking the pruner"):
            raise optuna.TrialPruned(f"pruned at epoch {epoch} with {self._metric_key}={value:.6g}")
