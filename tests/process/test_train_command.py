"""The image's real `train` console script (entrypoint/cli.py), run as SageMaker runs it, on a temp base folder."""

import csv
import json
import subprocess

import numpy as np
import optuna
import pytest

from hpo_study.constants import EMBEDDED_STORAGE_FILE
from tests.support.jobs import VENV_BIN, npz, train_env

pytestmark = pytest.mark.process


def run_train(base_dir, **env):
    return subprocess.run(
        [str(VENV_BIN / "train")], env=train_env(base_dir, **env), capture_output=True, text=True, timeout=300
    )


def test_full_run_on_the_embedded_storage(job_dir):
    base = job_dir({"n-trials": "3", "epochs": "2", "seed": "5", "study-name": "cli"})
    result = run_train(base, TRAINING_JOB_NAME="job-cli-1")
    assert result.returncode == 0, result.stderr
    model_files = sorted(p.name for p in (base / "model").iterdir())
    meta = json.loads((base / "model" / "model.json").read_text())
    assert model_files == ["model.json", meta["weights_file"]]
    study = optuna.load_study(
        study_name="cli", storage=f"sqlite:///{base / 'output' / 'data' / EMBEDDED_STORAGE_FILE}"
    )
    assert len(study.trials) == 3
    assert meta["value"] == max(t.value for t in study.trials if t.value is not None)
    assert {t.user_attrs["job_name"] for t in study.trials} == {"job-cli-1"}
    assert (meta["n_features"], meta["n_classes"], meta["study_name"]) == (64, 10, "cli")
    with open(base / "output" / "data" / "trials.csv") as f:
        assert [int(row["number"]) for row in csv.DictReader(f)] == [0, 1, 2]
    best = json.loads((base / "output" / "data" / "best_trial.json").read_text())
    assert best["number"] == meta["trial_number"]
    assert f"best_trial={best['number']}" in result.stdout
    assert not (base / "output" / "failure").exists()
    assert not (base / "output" / "data" / "plots").exists()  # drawn by `sagemaker-optuna report`
    storage = f"sqlite:///{base / 'output' / 'data' / EMBEDDED_STORAGE_FILE}"
    drawn = subprocess.run(
        [
            str(VENV_BIN / "sagemaker-optuna"),
            "report",
            "--study",
            "cli",
            "--storage",
            storage,
            "--out",
            str(base / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert drawn.returncode == 0, drawn.stderr
    plots = base / "r" / "plots"
    names = ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values")
    assert str(plots / "optimization_history.png") in drawn.stdout.splitlines()
    with open(base / "r" / "trials.csv") as f:
        assert [int(row["number"]) for row in csv.DictReader(f)] == [0, 1, 2]
    for name in names:
        assert (plots / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "plotly.min.js" in (plots / f"{name}.html").read_text()
    # A second job joins the same study and keeps its own best model.
    again = run_train(base, TRAINING_JOB_NAME="job-cli-2")
    assert again.returncode == 0, again.stderr
    assert len(optuna.load_study(study_name="cli", storage=study._storage).trials) == 6


def test_bad_hyperparameter_fails_before_touching_the_study(job_dir):
    base = job_dir({"n-trials": "many", "pruner": "asha"})
    result = run_train(base)
    assert result.returncode == 1
    failure = (base / "output" / "failure").read_text()
    assert (
        "'n-trials' must be an integer" in failure
        and "'pruner' must be one of none, median, hyperband" in failure
    )
    assert "Traceback" not in failure
    assert not (base / "output" / "data" / EMBEDDED_STORAGE_FILE).exists()
    assert list((base / "model").iterdir()) == []


def test_bad_data_gives_a_clear_failure(job_dir):
    base = job_dir({"n-trials": "1"})
    npz(base / "input" / "data" / "test" / "data.npz", x=np.full((3, 64), np.nan), y=np.array([0, 1, 2]))
    result = run_train(base)
    assert result.returncode == 1
    assert "features contain NaN or infinite values" in (base / "output" / "failure").read_text()


def test_readme_metric_definitions_read_the_real_output(job_dir):
    import ast
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = re.search(r"metric_definitions = (\[.*?\n\])", readme, re.S).group(1)
    definitions = {d["Name"]: re.compile(d["Regex"]) for d in ast.literal_eval(block)}
    base = job_dir({"n-trials": "1", "epochs": "1"})
    out = run_train(base).stdout
    epoch_line = next(line for line in out.splitlines() if line.startswith("trial=0 epoch=1 "))
    found = {
        name: float(rx.search(epoch_line).group(1))
        for name, rx in definitions.items()
        if rx.search(epoch_line)
    }
    assert set(found) == {"train:loss", "train:accuracy", "validation:loss", "validation:accuracy"}
    assert f"loss={found['train:loss']:.6g} accuracy={found['train:accuracy']:.6g} " in epoch_line
    best_line = next(line for line in out.splitlines() if line.startswith("best_trial="))
    assert float(definitions["best:value"].search(best_line).group(1)) >= 0


@pytest.mark.parametrize(
    "content, message",
    [
        (b"{not json", "is not valid JSON"),
        (b"", "is empty"),
        (b'["n-trials", "3"]', "must hold a JSON object of strings, not an array"),
        (b'{"study-name": "\xff"}', "is not UTF-8 text (byte 0xff"),
    ],
)
def test_a_bad_hyperparameters_file_fails_with_one_line(job_dir, content, message):
    """The toolkit's own `train` parsed this file first and failed with a traceback."""
    base = job_dir()
    (base / "input" / "config" / "hyperparameters.json").write_bytes(content)
    result = run_train(base)
    assert result.returncode == 1, result.stderr
    failure = (base / "output" / "failure").read_text()
    assert message in failure and "\n" not in failure.strip(), failure
    assert "Traceback" not in result.stdout + result.stderr


def test_a_long_unknown_key_is_not_echoed_in_full(job_dir):
    base = job_dir({"x" * 10_000: "1"})
    result = run_train(base)
    assert result.returncode == 1
    failure = (base / "output" / "failure").read_text()
    assert "unknown hyperparameter 'xxxx" in failure and "(10000 characters)" in failure
    assert len(failure) < 1024
    assert "x" * 100 not in result.stdout + result.stderr  # nor in the log


def test_train_runs_the_module_named_by_sagemaker_training_module(job_dir, tmp_path):
    """Like the toolkit's framework mode: a derived image may name its own function."""
    (tmp_path / "custom_entry.py").write_text(
        "from core.errors import UserError\ndef run():\n    raise UserError('custom entry point ran')\n"
    )
    base = job_dir()
    env = {**train_env(base, PYTHONPATH=str(tmp_path)), "SAGEMAKER_TRAINING_MODULE": "custom_entry:run"}
    result = subprocess.run([str(VENV_BIN / "train")], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert (base / "output" / "failure").read_text() == "custom entry point ran"


def test_a_training_module_that_cannot_be_imported_fails_with_a_failure_file(job_dir):
    base = job_dir()
    env = {**train_env(base), "SAGEMAKER_TRAINING_MODULE": "no_such_module:main"}
    result = subprocess.run([str(VENV_BIN / "train")], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert (
        base / "output" / "failure"
    ).read_text() == "ModuleNotFoundError: No module named 'no_such_module'"
