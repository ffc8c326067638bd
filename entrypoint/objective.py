"""Channels + a trial -> a trained Chainer network and its validation metric."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

import chainer
import chainer.links as L
import numpy as np
import optuna
from chainer import training
from chainer.training import extensions

from entrypoint import usermodule
from entrypoint.constants import ATTR_EPOCHS, ATTR_JOB_NAME
from entrypoint.data import Dataset
from entrypoint.dberrors import direct
from entrypoint.pruning import OptunaReport
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
        train_iter = chainer.iterators.SerialIterator(
            chainer.datasets.TupleDataset(data.train.x, data.train.y), batch_size
        )
        test_iter = chainer.iterators.SerialIterator(
            chainer.datasets.TupleDataset(data.test.x, data.test.y),
            self._settings.batch_size,
            repeat=False,
            shuffle=False,
        )
        report = OptunaReport(trial, self._settings.metric_key, db=self._db)
        with tempfile.TemporaryDirectory(prefix="chainer-trainer-") as out:
            # Chainer's Trainer insists on an output folder; nothing we use writes into it.
            trainer = training.Trainer(
                training.updaters.StandardUpdater(train_iter, optimizer),
                (self._settings.epochs, "epoch"),
                out=out,
            )
            trainer.extend(extensions.Evaluator(test_iter, model))
            trainer.extend(extensions.LogReport(log_name=None))
            trainer.extend(report)
            if self._guard is not None:  # SIGTERM ends the trial at the next iteration
                trainer.extend(lambda _: self._guard.check(), trigger=(1, "iteration"), name="StopCheck")
            try:
                trainer.run(show_loop_exception_msg=False)
            finally:
                metrics = {key.replace("main/", "").replace("/", "_"): v for key, v in report.last.items()}
                metrics[ATTR_EPOCHS] = int(report.last.get("epoch", 0))
                for key, v in metrics.items():
                    self._db(lambda k=key, v=v: trial.set_user_attr(k, v), "recording metrics")
        value = report.last[self._settings.metric_key]
        self.trained[trial.number] = predictor
        return value
