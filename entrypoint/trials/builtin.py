"""The built-in model's half of the trial: its search space, its optimizer and its baseline trial
(the network itself is core/network.py's, shared with serving). A user module replaces the first
two (entrypoint/trials/usermodule.py)."""

from __future__ import annotations

from typing import Any

import chainer
import optuna

# The first trial of a new study on the built-in network (hyperparameter baseline-trial): the
# configuration of Chainer's own MNIST MLP example (two hidden layers, Adam at its default rate),
# inside the search space of suggest_params. A study then has a good model after its
# first trial, and the median pruner a strong reference, while the sampler explores the rest.
BASELINE_PARAMS: dict[str, object] = {
    "n_layers": 2,
    "n_units_l0": 128,
    "n_units_l1": 64,
    "optimizer": "Adam",
    "adam_alpha": 1e-3,
    "weight_decay": 1e-6,
}


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
