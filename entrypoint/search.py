"""Settings -> Optuna sampler, pruner and this job's seed."""

from __future__ import annotations

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
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(settings: Settings) -> optuna.pruners.BasePruner:
    if settings.pruner == "median":
        # Optuna's median rule, reading each finished trial once (flat in the study's size)
        return pruning.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=settings.epochs)
    return optuna.pruners.NopPruner()
