"""Settings -> the Optuna sampler and pruner this job runs (the tables: hpo_study/samplers.py,
hpo_study/pruners.py)."""

from __future__ import annotations

import optuna

from hpo_study.pruners import PRUNERS
from hpo_study.samplers import SAMPLERS
from hpo_study.settings import Settings


def make_sampler(settings: Settings, seed: int | None) -> optuna.samplers.BaseSampler:
    """The sampler the 'sampler' hyperparameter names (settings accepts only names in SAMPLERS)."""
    return SAMPLERS[settings.sampler](seed)


def make_pruner(settings: Settings) -> optuna.pruners.BasePruner:
    """The pruner the 'pruner' hyperparameter names (settings accepts only names in PRUNERS)."""
    return PRUNERS[settings.pruner].make(settings.epochs)
