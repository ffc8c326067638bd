"""Channels + a trial -> a trained Chainer network and its validation metric."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chainer
import chainer.links as L
import numpy as np
import optuna

from entrypoint import loop, trialdb, usermodule
from entrypoint.constants import ATTR_EPOCHS, ATTR_JOB_NAME
from entrypoint.data import Dataset
from entrypoint.dberrors import direct
from entrypoint.pruning import EpochReporter, field_name
from entrypoint.settings import Settings
from entrypoint.stopping import Guard
from entrypoint.usermodule import ModelSpec


def suggest_params(trial: optuna.Trial) -> dict[str, Any]:
    """The search space of the AWS sample's MLP, for any input width and class count."""
    n_layers = trial.suggest_int("n_layers", 1, 3)
    for i in range(n_layers):
        trial.suggest_int(f"n_units_l{i}", 4, 128, log=True)
    optimizer = trial.suggest_categorical("optimizer", ["Adam", "MomentumSGD"])
    if optimizer == "Adam":
        trial.suggest_float("adam_alpha", 1e-5, 1e-1, log=True)
    else:
        trial.suggest_float("momentum_sgd_lr", 1e-5, 1e-1, log=True)
    trial.suggest_float("weight_decay", 1e-10, 1e-3, log=True)
    return dict(trial.params)


def make_optimizer(params: dict[str, Any], model: chainer.Link) -> chainer.Optimizer:
    if params["optimizer"] == "Adam":
        optimizer = chainer.optimizers.Adam(alpha=params["adam_alpha"])
    else:
        optimizer = chainer.optimizers.MomentumSGD(lr=params["momentum_sgd_lr"])
    optimizer.setup(model)
    optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(params["weight_decay"]))
    return optimizer


class Objective:
    """Train one network per trial; keep the last trained network for the best-model keeper."""

    def __init__(
        self,
        settings: Settings,
        dataset: Dataset,
        job_name: str,
        seed: int | None,
        guard: Guard | None = None,
        db: Callable[[Callable[[], Any], str], Any] = direct,
        spec: ModelSpec | None = None,
    ) -> None:
        self._spec = spec or usermodule.builtin()
        self._guard = guard
        self._db = db
        self._settings = settings
        self._dataset = dataset
        self._job_name = job_name
        self._seed = seed
        self.trained: dict[int, chainer.Link] = {}  # trial number -> predictor, until kept or dropped

    def __call__(self, trial: optuna.Trial) -> float:
        params = self._db(lambda: self._spec.suggest_params(trial), "sampling parameters")
        self._db(lambda: trial.set_user_attr(ATTR_JOB_NAME, self._job_name), "recording the job name")
        if self._seed is not None:
            np.random.seed((self._seed + trial.number) % 2**32)
        data = self._dataset
        predictor = self._spec.build_network(params, data.n_features, data.n_classes)
        model = L.Classifier(predictor)
        optimizer = self._spec.make_optimizer(params, model)
        batch_size = min(self._settings.batch_size, len(data.train.y))
        report = EpochReporter(trial, self._settings.metric_key, db=self._db)
        check = self._guard.check if self._guard is not None else (lambda: None)
        try:
            # SIGTERM and the trial deadline end the trial at the next iteration (check).
            loop.train(
                model, optimizer, data.train, data.test, self._settings.epochs, batch_size, report, check
            )
        finally:
            metrics = {field_name(k): v for k, v in report.last.items() if k != "epoch"}
            metrics[ATTR_EPOCHS] = int(report.last.get("epoch", 0))
            # One transaction: the epochs' values the pruner kept back, and the metrics.
            self._db(lambda: trialdb.record(trial, report.pending, metrics), "recording the trial")
        value = report.last[self._settings.metric_key]
        self.trained[trial.number] = predictor
        return value
