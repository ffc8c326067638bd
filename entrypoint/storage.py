"""Settings -> an Optuna storage and the study this job joins."""

from __future__ import annotations

from pathlib import Path

import optuna

from entrypoint.constants import EMBEDDED_STORAGE_FILE
from entrypoint.settings import Settings


def embedded_url(output_data_dir: str | Path) -> str:
    """A SQLite file in the output data folder, so the study ships in output.tar.gz."""
    path = Path(output_data_dir) / EMBEDDED_STORAGE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


def open_storage(settings: Settings, output_data_dir: str | Path) -> optuna.storages.BaseStorage:
    return optuna.storages.RDBStorage(embedded_url(output_data_dir))


def join_study(
    settings: Settings,
    storage: optuna.storages.BaseStorage,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    return optuna.create_study(
        storage=storage,
        study_name=settings.study_name,
        direction=settings.direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
