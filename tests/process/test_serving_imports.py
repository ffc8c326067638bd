"""Serving depends on the shared core only: its workers never load the training side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devtools.localmodel import write_model

pytestmark = pytest.mark.process  # a fresh interpreter: this process has imported everything


def test_serving_workers_import_neither_optuna_nor_the_training_toolkit(tmp_path):
    """A worker (the falcon app, the server, the model loader) loads a model in a fresh process
    without Optuna, sagemaker-training or the training package: serving depends on core only."""
    write_model(tmp_path / "model", 8, 3)
    check = (
        "import sys\n"
        "import serving.app, serving.handlers, serving.model, serving.server\n"
        f"serving.model.load_model({str(tmp_path / 'model')!r})\n"
        "roots = {name.partition('.')[0] for name in sys.modules}\n"
        "print(sorted(roots & {'optuna', 'sagemaker_training', 'entrypoint', 'hpo_study', 'launcher', 'devtools'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
