"""Shared fixtures: real data on disk, a real /opt/ml-like folder per test."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from devtools.localjob import digits_channels, write_job_folder

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


# --- real services (see tests/services.py) -------------------------------------------------

from tests import services  # noqa: E402


@pytest.fixture(scope="session")
def moto_endpoint():
    """A moto server over HTTP for the whole session (Secrets Manager, SageMaker, S3, ECR)."""
    with services.moto_server() as url:
        yield url


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    """Point boto3 (here and in child processes) at the moto server; return a secret writer."""
    import boto3

    for key, value in services.aws_env(moto_endpoint).items():
        monkeypatch.setenv(key, value)
    client = boto3.client("secretsmanager", region_name=services.REGION)

    def put_secret(doc) -> str:
        name = f"test/optuna/{uuid.uuid4().hex[:8]}"
        body = doc if isinstance(doc, str) else json.dumps(doc)
        client.create_secret(Name=name, SecretString=body)
        return name

    return put_secret


@pytest.fixture
def mysql_db():
    with services.mysql_database() as db:
        yield db


@pytest.fixture
def postgres_db():
    with services.postgres_database() as db:
        yield db


@pytest.fixture(scope="session")
def private_mariadb(tmp_path_factory):
    server = services.PrivateMariaDB(tmp_path_factory.mktemp("mariadb"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_db(private_mariadb):
    """A fresh database on the private (TLS, restartable) MariaDB, which is running at start."""
    if private_mariadb.proc is None:
        private_mariadb.start()
    with services.mysql_database(port=private_mariadb.port) as db:
        yield db


# --- the image, built once per session for tests/test_image.py and tests/test_sdk_local.py ------


@pytest.fixture(scope="session")
def engine():
    from tests.test_image import find_engine

    return find_engine()


@pytest.fixture(scope="session")
def image(engine):
    from tests.test_image import build_image

    yield from build_image(engine)
