"""The training entry point: ``SAGEMAKER_TRAINING_MODULE=entrypoint.train:main``.

The toolkit's ``train`` command imports this module and calls :func:`main`. A
:class:`~entrypoint.errors.UserError` becomes a short failure file and exit code 1.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import optuna
from sagemaker_training import environment

from entrypoint import data, report, search, storage
from entrypoint import settings as settings_mod
from entrypoint.constants import ENV_TRAINING_JOB_NAME
from entrypoint.dberrors import retrying
from entrypoint.keeper import BestModelKeeper
from entrypoint.objective import Objective
from entrypoint.redact import redacting
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
    db = storage.resolve(settings, paths.output_data_dir)
    with redacting(db.password):
        return _run_on(db, settings, paths, job_name, dataset)


def _run_on(
    db: storage.Database, settings: Settings, paths: JobPaths, job_name: str, dataset: data.Dataset
) -> optuna.Study:
    seed = search.job_seed(settings.seed, job_name)
    study = storage.join_study(
        settings, db, search.make_sampler(settings, seed), search.make_pruner(settings)
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
    logger.info(
        "Job %s joins study '%s' on %r for %d trials", job_name, study.study_name, db.url, settings.n_trials
    )
    optimize(study, objective, keeper, settings)
    best = retrying(
        lambda: report.write(study, paths.output_data_dir), settings.db_retry_timeout, "writing the report"
    )
    if best is not None:
        print(f"best_trial={best.number} best_value={best.value:.6g} params={best.params}")
    if keeper.meta is not None:
        print(f"model_trial={keeper.meta['trial_number']} model_value={keeper.meta['value']:.6g}")
    else:
        logger.warning("No trial of this job completed: model_dir holds no model")
    return study


def _finished_in_study(study: optuna.Study) -> int:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def optimize(study: optuna.Study, objective: Objective, keeper: BestModelKeeper, settings: Settings) -> int:
    """Run up to n-trials trials one at a time, so that the study-wide cap, the job timeout and
    database outages are handled between trials. Returns the number of trials run."""
    deadline = time.monotonic() + settings.timeout if settings.timeout else None
    done = 0
    while done < settings.n_trials:
        if deadline is not None and time.monotonic() >= deadline:
            logger.info("Timeout of %s s reached after %d trials", settings.timeout, done)
            break
        if settings.max_trials is not None:
            finished = retrying(
                lambda: _finished_in_study(study), settings.db_retry_timeout, "counting trials"
            )
            if finished >= settings.max_trials:
                logger.info(
                    "Study has %d finished trials (max-trials %d): stopping", finished, settings.max_trials
                )
                break
        retrying(
            lambda: study.optimize(objective, n_trials=1, callbacks=[keeper], catch=(FloatingPointError,)),
            settings.db_retry_timeout,
            "running a trial",
        )
        done += 1
    return done


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
