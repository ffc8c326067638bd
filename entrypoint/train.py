"""The training entry point: ``SAGEMAKER_TRAINING_MODULE=entrypoint.train:main``.

The toolkit's ``train`` command imports this module and calls :func:`main`. A
:class:`~entrypoint.errors.UserError` becomes a short failure file and exit code 1.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import optuna
from sagemaker_training import environment

from entrypoint import data, report, search, storage
from entrypoint import settings as settings_mod
from entrypoint.constants import ENV_TRAINING_JOB_NAME
from entrypoint.keeper import BestModelKeeper
from entrypoint.objective import Objective
from entrypoint.settings import Settings

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class JobPaths:
    model_dir: Path
    output_data_dir: Path
    channels: dict[str, str]


def run(settings: Settings, paths: JobPaths, job_name: str) -> optuna.Study:
    """Join the study, run this job's trials, keep the best model, write the summary."""
    dataset = data.load(paths.channels)
    logger.info(
        "Data: %d training and %d test examples, %d features, %d classes",
        len(dataset.train.y),
        len(dataset.test.y),
        dataset.n_features,
        dataset.n_classes,
    )
    seed = search.job_seed(settings.seed, job_name)
    study = storage.join_study(
        settings,
        storage.open_storage(settings, paths.output_data_dir),
        search.make_sampler(settings, seed),
        search.make_pruner(settings),
    )
    objective = Objective(settings, dataset, job_name, seed)
    keeper = BestModelKeeper(
        paths.model_dir,
        study.direction,
        objective.trained,
        describe=lambda trial: {
            "study_name": study.study_name,
            "job_name": job_name,
            "n_features": dataset.n_features,
            "n_classes": dataset.n_classes,
            "objective_metric": settings.objective_metric,
            "direction": settings.direction,
        },
    )
    logger.info("Job %s joins study '%s' for %d trials", job_name, study.study_name, settings.n_trials)
    study.optimize(
        objective,
        n_trials=settings.n_trials,
        timeout=settings.timeout,
        callbacks=[keeper],
        catch=(FloatingPointError,),
    )
    best = report.write(study, paths.output_data_dir)
    if best is not None:
        print(f"best_trial={best.number} best_value={best.value:.6g} params={best.params}")
    if keeper.meta is not None:
        print(f"model_trial={keeper.meta['trial_number']} model_value={keeper.meta['value']:.6g}")
    else:
        logger.warning("No trial of this job completed: model_dir holds no model")
    return study


def _channel_names() -> list[str]:
    try:
        return list(environment.read_input_data_config())
    except FileNotFoundError:  # a hand-made local folder: take the channel folders present
        data_dir = Path(environment.channel_path("x")).parent
        return sorted(p.name for p in data_dir.iterdir() if p.is_dir()) if data_dir.is_dir() else []


def main() -> None:
    """Framework-mode entry point called by the sagemaker-training toolkit's ``train``."""
    # The toolkit's paths honour SAGEMAKER_BASE_DIR. We do not build its Environment object:
    # it logs every hyperparameter value that is not JSON.
    settings = settings_mod.load(environment.hyperparameters_file_dir)
    job_name = os.environ.get(ENV_TRAINING_JOB_NAME) or f"local-{os.getpid()}"
    paths = JobPaths(
        model_dir=Path(environment.model_dir),
        output_data_dir=Path(environment.output_data_dir),
        channels={name: environment.channel_path(name) for name in _channel_names()},
    )
    run(settings, paths, job_name)
