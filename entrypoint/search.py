"""Settings -> Optuna sampler, pruner and this job's seed."""

from __future__ import annotations

import copy
import hashlib

import optuna

from entrypoint import pruning
from entrypoint.settings import Settings


def job_seed(base_seed: int | None, job_name: str) -> int | None:
    """A seed of this job's own, so that identical parallel jobs do not repeat each other."""
    if base_seed is None:
        return None
    digest = hashlib.sha256(f"{base_seed}:{job_name}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 2**31


def make_sampler(settings: Settings, seed: int | None) -> optuna.samplers.BaseSampler:
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True)
    # constant_liar: trials still running elsewhere count as bad, so parallel jobs spread out.
    return LiarTPESampler(seed=seed, constant_liar=True)


class _TrialSnapshot:
    """A study whose trial list is read once per trial (stands in for it inside the sampler)."""

    def __init__(self, study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> None:
        self._study, self._trials = study, trials

    def __getattr__(self, name: str):
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False):
        trials = self._trials if states is None else [t for t in self._trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials


class LiarTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPE with ``constant_liar``, reading the study once per trial.

    With ``constant_liar`` Optuna bypasses its per-trial cache of the study and re-reads every
    unfinished trial (six queries each) for each parameter it samples: profiled on MariaDB, a
    third of a short trial's time. Here the trials, running ones included, are read at the
    trial's first sampled parameter and reused for its others; trials that start meanwhile in
    other jobs count from the next trial on. Overrides Optuna's private ``_sample`` (Optuna is
    pinned; tests/test_pruning.py compares the parameters with Optuna's own sampler).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._snapshot: tuple[int, int, list[optuna.trial.FrozenTrial]] | None = None

    def _sample(self, study, trial, search_space):
        key = (study._study_id, trial.number)
        if self._snapshot is None or self._snapshot[:2] != key:
            self._snapshot = (*key, study._get_trials(deepcopy=False, use_cache=False))
        return super()._sample(_TrialSnapshot(study, self._snapshot[2]), trial, search_space)


def make_pruner(settings: Settings) -> optuna.pruners.BasePruner:
    if settings.pruner == "median":
        # Optuna's median rule, reading each finished trial once (flat in the study's size)
        return pruning.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=settings.epochs)
    return optuna.pruners.NopPruner()
