"""Hostile files met by the real `train` command: a hyperparameters file nested 200,000 deep, a
poisoned checkpoint on a spot restart, full model and output folders."""

from __future__ import annotations

import json

import pytest

from core import artifact
from entrypoint.model.checkpoint import SET_ASIDE_SUFFIX
from tests.support.hostile import checkpointed_model, deep_json
from tests.support.jobs import finish, run_train, start_job, tmpfs


@pytest.mark.process
def test_a_hyperparameters_file_nested_200000_deep_fails_in_one_line(job_dir, moto_endpoint):
    base = job_dir({})
    (base / "input" / "config" / "hyperparameters.json").write_text(deep_json())
    rc, _, err = finish(start_job(base, "deep", moto_endpoint), timeout=120)
    assert rc == 1
    reason = (base / "output" / "failure").read_text()
    assert reason.endswith("is not valid JSON: nested too deeply") and len(reason) < 1024
    assert "Traceback" not in err and "RecursionError" not in err


# --- a poisoned checkpoint is set aside and the job runs -----------------------------------------


@pytest.mark.process
def test_a_spot_job_whose_checkpoint_is_poisoned_runs(job_dir, moto_endpoint):
    base = job_dir({"study-name": "spot", "n-trials": "2", "epochs": "2"})
    model_dir = checkpointed_model(base / "checkpoints", weights_file="../../outside.npz")
    (base / "outside.npz").write_bytes(b"not weights")
    rc, _, err = finish(start_job(base, "spot", moto_endpoint), timeout=300)
    assert rc == 0, err[-3000:]
    assert "Checkpointed model set aside" in err and "is not a file name in the model folder" in err
    assert (base / "checkpoints" / f"model{SET_ASIDE_SUFFIX}" / "model.json").is_file()
    meta = json.loads((base / "model" / "model.json").read_text())
    assert (base / "model" / meta["weights_file"]).is_file()
    assert artifact.read(model_dir).weights_file == meta["weights_file"]  # a new checkpoint copy
    assert (base / "outside.npz").read_bytes() == b"not weights"


@pytest.mark.process
def test_a_full_model_folder_logs_no_stray_traceback_and_a_full_output_folder_no_empty_failure(job_dir):
    base = job_dir({"n-trials": "2", "epochs": "1", "seed": "1"})
    with tmpfs(base / "model", "64k", fill_to_kb=56):
        result = run_train(base)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "No space left on device" in (base / "output" / "failure").read_text()
    assert "Exception ignored" not in result.stderr and "ZipFile.__del__" not in result.stderr
    base = job_dir({"n-trials": "many"})
    with tmpfs(base / "output", "1m", fill_to_kb=1024):
        result = run_train(base)
        assert not (base / "output" / "failure").exists()  # not an empty FailureReason
    assert result.returncode == 1 and "'n-trials' must be an integer" in result.stderr
