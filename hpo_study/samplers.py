"""The 'sampler' hyperparameter's table: name -> the Optuna sampler, given a job's seed.

To add a sampler, add its factory here (and its tests): the 'sampler' hyperparameter accepts
exactly these names (hpo_study/settings.py reads the table); the job builds the named one
(entrypoint/trials/search.py).
"""

from __future__ import annotations

from collections.abc import Callable

import optuna

from hpo_study.optuna_private import LiarTPESampler

# name -> the sampler, given this job's seed (the default name: settings.Settings.sampler).
SAMPLERS: dict[str, Callable[[int | None], optuna.samplers.BaseSampler]] = {
    # constant_liar: trials still running elsewhere count as bad, so parallel jobs spread out.
    "tpe": lambda seed: LiarTPESampler(seed=seed, constant_liar=True),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "qmc": lambda seed: optuna.samplers.QMCSampler(seed=seed, scramble=True),
}
