"""Channels + a trial -> a trained Chainer network and its validation metric."""

from __future__ import annotations

import chainer
import chainer.links as L
import numpy as np
import optuna

from entrypoint.job.context import JobContext
from entrypoint.trials import loop, usermodule
from entrypoint.trials.data import Dataset
from entrypoint.trials.reporting import EpochReporter, field_name
from entrypoint.trials.usermodule import ModelSpec
from hpo_study import trialdb
from hpo_study.constants import ATTR_EPOCHS, ATTR_HOST, ATTR_JOB_NAME


class Objective:
    """Train one network per trial; keep the last trained network for the best-model keeper."""

    def __init__(self, job: JobContext, dataset: Dataset, spec: ModelSpec | None = None) -> None:
        self._job = job
        self._spec = spec or usermodule.builtin()
        self._dataset = dataset
        self.trained: dict[int, chainer.Link] = {}  # trial number -> predictor, until kept or dropped

    def __call__(self, trial: optuna.Trial) -> float:
        job, settings, retry = self._job, self._job.settings, self._job.retry
        params = retry(lambda: self._spec.suggest_params(trial), "sampling parameters")
        retry(lambda: trial.set_user_attr(ATTR_JOB_NAME, job.name), "recording the job name")
        if job.seed is not None:
            np.random.seed((job.seed + trial.number) % 2**32)
        data = self._dataset
        predictor = self._spec.build_network(params, data.n_features, data.n_classes)
        model = L.Classifier(predictor)
        optimizer = self._spec.make_optimizer(params, model)
        batch_size = min(settings.batch_size, len(data.train.y))
        report = EpochReporter(trial, settings.metric_key, retry=retry)
        try:
            # SIGTERM and the trial deadline end the trial at the next iteration (check).
            loop.train(
                model, optimizer, data.train, data.test, settings.epochs, batch_size, report, job.guard.check
            )
        finally:
            metrics = {field_name(k): v for k, v in report.last.items() if k != "epoch"}
            metrics[ATTR_EPOCHS] = int(report.last.get("epoch", 0))
            if job.host is not None:
                metrics[ATTR_HOST] = job.host
            # One transaction: the epochs' values the pruner kept back, and the metrics.
            retry(lambda: trialdb.record(trial, report.pending, metrics), "recording the trial")
        value = report.last[settings.metric_key]
        self.trained[trial.number] = predictor
        return value
