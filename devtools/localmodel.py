"""A model folder exactly as training writes it, without training: for tests and benchmarks.

The trial is asked through training's own search space (ours, or a user's model-module) and
the files are written by training's own BestModelKeeper and ``usermodule.pack``; only the
weights are Chainer's random initialisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import chainer
import numpy as np
import optuna

from core.artifact import ModelSource
from entrypoint.model.keeper import BestModelKeeper
from entrypoint.trials import builtin, usermodule

LOCAL_NAME = "local-model"
# The built-in network's baseline configuration: a model like the first trial of a new study.
DEFAULT_PARAMS: dict[str, Any] = dict(builtin.BASELINE_PARAMS)


def write_model(
    model_dir: str | Path,
    n_features: int,
    n_classes: int,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    spec: usermodule.ModelSpec | None = None,
) -> chainer.Link:
    """Write model.json + trial-0.npz (+ code/ for a model-module) for a fresh network; return it."""
    spec = spec or usermodule.builtin()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=LOCAL_NAME, direction="maximize")
    if params is not None or spec.module is None:
        study.enqueue_trial(params or DEFAULT_PARAMS)
    trial = study.ask()
    rng_state = np.random.get_state()  # Chainer's initialisers draw from numpy's global RNG
    np.random.seed(seed)
    try:
        network = spec.build_network(spec.suggest_params(trial), n_features, n_classes)
    finally:
        np.random.set_state(rng_state)
    study.tell(trial, 0.0)
    source = ModelSource(
        study_name=LOCAL_NAME,
        job_name=LOCAL_NAME,
        n_features=n_features,
        n_classes=n_classes,
        objective_metric="accuracy",
        direction="maximize",
        model_module=spec.module_name,
    )
    keeper = BestModelKeeper(model_dir, study.direction, {trial.number: network}, source)
    keeper(study, study.trials[-1])
    usermodule.pack(spec, model_dir)
    return network
