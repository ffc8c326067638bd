"""One trial's training: our objective against a bare Chainer loop and Chainer's Trainer.

    .venv/bin/python benchmarks/training_loop.py [--repeats 5] [--epochs 3]

Data: 20,000 generated examples of 784 features in 10 classes (16,000 train, 4,000 test),
an MLP of 128 and 64 units, Adam, batch size 128. Arms, interleaved in every repeat:
  bare     forward, backward and update over array slices of a shuffled copy, then one
           batched evaluation pass per epoch: the floor for any Chainer loop;
  ours     entrypoint.objective.Objective on a trial of an in-memory study: the same, plus
           what a job needs (SIGTERM/deadline check per iteration, metric lines, report and
           median pruner per epoch, metrics recorded);
  trainer  what the objective did before: Chainer's Trainer, StandardUpdater over a
           TupleDataset, Evaluator, LogReport and a report extension.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time

import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np
import optuna
from chainer import training
from chainer.training import extensions

from core import network
from entrypoint.job.context import JobContext
from entrypoint.job.stopping import Guard
from entrypoint.trials import builtin, objective, search
from entrypoint.trials.data import Dataset, Split
from hpo_study import settings

PARAMS = {"n_layers": 2, "n_units_l0": 128, "n_units_l1": 64, "optimizer": "Adam", "adam_alpha": 1e-3}
PARAMS["weight_decay"] = 1e-6
BATCH = 128


def make_data(n: int = 20_000, features: int = 784, classes: int = 10) -> Dataset:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, size=(classes, features)).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int32)
    x = (centres[y] + rng.normal(0, 4, size=(n, features))).astype(np.float32)
    cut = n * 4 // 5
    return Dataset(Split(x[:cut], y[:cut]), Split(x[cut:], y[cut:]), features, classes)


def model_and_optimizer(data: Dataset):
    model = L.Classifier(network.build_network(PARAMS, data.n_features, data.n_classes))
    return model, builtin.make_optimizer(PARAMS, model)


def bare(data: Dataset, epochs: int) -> float:
    model, optimizer = model_and_optimizer(data)
    n = len(data.train.y)
    for _ in range(epochs):
        order = np.random.permutation(n)
        for start in range(0, n, BATCH):
            idx = order[start : start + BATCH]
            optimizer.update(model, data.train.x[idx], data.train.y[idx])
        with chainer.using_config("train", False), chainer.no_backprop_mode():
            logits = model.predictor(data.test.x)
            accuracy = float((logits.array.argmax(axis=1) == data.test.y).mean())
            float(F.softmax_cross_entropy(logits, data.test.y).array)
    return accuracy


def ours(data: Dataset, epochs: int) -> float:
    s = settings.parse({"epochs": str(epochs), "batch-size": str(BATCH)})
    study = optuna.create_study(direction="maximize", pruner=search.make_pruner(s))
    study.enqueue_trial(PARAMS)
    run = objective.Objective(JobContext(s, "bench", Guard()), data)
    trial = study.ask()
    with contextlib.redirect_stdout(io.StringIO()):
        return run(trial)


def trainer(data: Dataset, epochs: int) -> float:
    model, optimizer = model_and_optimizer(data)
    train_iter = chainer.iterators.SerialIterator(
        chainer.datasets.TupleDataset(data.train.x, data.train.y), BATCH
    )
    test_iter = chainer.iterators.SerialIterator(
        chainer.datasets.TupleDataset(data.test.x, data.test.y), BATCH, repeat=False, shuffle=False
    )
    with tempfile.TemporaryDirectory() as out:
        t = training.Trainer(
            training.updaters.StandardUpdater(train_iter, optimizer), (epochs, "epoch"), out=out
        )
        t.extend(extensions.Evaluator(test_iter, model))
        log = extensions.LogReport(log_name=None)
        t.extend(log)
        t.extend(lambda _: None, trigger=(1, "epoch"), priority=training.PRIORITY_READER - 1, name="Report")
        t.run()
    return log.log[-1]["validation/main/accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = make_data()
    arms = {"bare": bare, "ours": ours, "trainer": trainer}
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    loads = []
    for _ in range(args.repeats):  # interleaved: every arm sees the same load
        for name, arm in arms.items():
            loads.append(os.getloadavg()[0])
            t0 = time.perf_counter()
            accuracy = arm(data, args.epochs)
            seconds[name].append(time.perf_counter() - t0)
            print(f"{name}: {seconds[name][-1]:.2f} s, validation accuracy {accuracy:.4f}", flush=True)
    base = statistics.median(seconds["bare"])
    print(f"\n{args.epochs} epochs, {args.repeats} repeats, load average {min(loads):.1f}-{max(loads):.1f}")
    for name, values in seconds.items():
        ratios = [v / b for v, b in zip(values, seconds["bare"], strict=True)]
        print(
            f"{name}: median {statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f}), "
            f"{statistics.median(values) / base:.3f}x bare (per-repeat ratios {min(ratios):.2f}-{max(ratios):.2f})"
        )


if __name__ == "__main__":
    main()
