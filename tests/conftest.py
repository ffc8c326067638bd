"""Shared fixtures: real data on disk, a real /opt/ml-like folder per test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from entrypoint.localjob import digits_channels, write_job_folder

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits, split train/test (read from the package's own file)."""
    return digits_channels()


@pytest.fixture(scope="session")
def small_digits(digits):
    """A 400/200 subset: enough to learn something in a few epochs, fast enough for tests."""
    (xtr, ytr), (xte, yte) = digits["train"], digits["test"]
    return {"train": (xtr[:400], ytr[:400]), "test": (xte[:200], yte[:200])}


@pytest.fixture
def job_dir(tmp_path, small_digits):
    """Return a function that lays out a job folder with the given hyperparameters."""

    def make(hyperparameters: dict[str, str] | None = None, channels=None) -> Path:
        return write_job_folder(
            tmp_path / "opt_ml", hyperparameters or {}, small_digits if channels is None else channels
        )

    return make


def train_env(base_dir: Path, **extra: str) -> dict[str, str]:
    """The environment the image gives the toolkit's `train`, pointed at a local folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_"))}
    env.update(
        SAGEMAKER_BASE_DIR=str(base_dir),
        SAGEMAKER_TRAINING_MODULE="entrypoint.train:main",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def npz(path: Path, **arrays: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path
