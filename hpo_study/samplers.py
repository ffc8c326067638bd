"""Settings -> Optuna sampler, pruner and this job's seed.

To add a sampler, add its factory to :data:`SAMPLERS`: the 'sampler' hyperparameter accepts
exactly these names (settings.py reads the table). Pruners: :data:`entrypoint.pruning.PRUNERS`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import optuna

from entrypoint.trials import reporting as pruning
from hpo_study.optuna_private import LiarTPESampler

if TYPE_CHECKING:  # settings.py reads SAMPLERS: no import of it at run time
    from hpo_study.settings import Settings


def job_seed(base_seed: int | None, job_name: str) -> int | None:
    """A seed of this job's own, so that identical parallel jobs do not repeat each other."""
    if base_seed is None:
        return None
    digest = hashlib.sha256(f"{base_seed}:{job_name}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 2**31


# The first trial of a new study on the built-in network (hyperparameter baseline-trial): the
# configuration of Chainer's own MNIST MLP example (two hidden layers, Adam at its default rate),
# inside the search space of objective.suggest_params. A study then has a good model after its
# first trial, and the median pruner a strong reference, while the sampler explores the rest.
BASELINE_PARAMS: dict[str, object] = {
    "n_layers": 2,
    "n_units_l0": 128,
    "n_units_l1": 64,
    "optimizer": "Adam",
    "adam_alpha": 1e-3,
    "weight_decay": 1e-6,
}


# name -> the sampler, given this job's seed (the default name: settings.Settings.sampler).
SAMPLERS: dict[str, Callable[[int | None], optuna.samplers.BaseSampler]] = {
    # constant_liar: trials still running elsewhere count as bad, so parallel jobs spread out.
    "tpe": lambda seed: LiarTPESampler(seed=seed, constant_liar=True),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "qmc": lambda seed: optuna.samplers.QMCSampler(seed=seed, scramble=True),
}


def make_sampler(settings: Settings, seed: int | None) -> optuna.samplers.BaseSampler:
    """The sampler the 'sampler' hyperparameter names (settings accepts only names in SAMPLERS)."""
    return SAMPLERS[settings.sampler](seed)


def make_pruner(settings: Settings) -> optuna.pruners.BasePruner:
    """The pruner the 'pruner' hyperparameter names (settings accepts only names in PRUNERS)."""
    return pruning.PRUNERS[settings.pruner](settings.epochs)
