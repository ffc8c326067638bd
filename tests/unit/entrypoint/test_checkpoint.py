"""Checkpoints (entrypoint/model/checkpoint.py): a weights file that is not a name in the folder, a
malformed progress file, a checkpointed model that fails the checks, are set aside or refused."""

from __future__ import annotations

import json
import logging

import pytest

from core import artifact
from devtools.localmodel import DEFAULT_PARAMS
from entrypoint.model.checkpoint import SET_ASIDE_SUFFIX, Progress
from tests.support.hostile import checkpointed_model

# --- checkpoint restore -------------------------------------------------------------------


def checkpoint_with_model(tmp_path, weights_file):
    folder = tmp_path / "checkpoints"
    (folder / "model").mkdir(parents=True)
    (tmp_path / "outside.npz").write_bytes(b"weights")  # what ../ points at
    meta = {"weights_file": weights_file, "job_name": "j", "study_name": "s", "trial_number": 0}
    (folder / "model" / "model.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.unit
@pytest.mark.parametrize("weights", ["../../outside.npz", "/etc/hostname", "", 7])
def test_restore_refuses_a_weights_file_that_is_not_a_name_in_the_folder(tmp_path, weights, caplog):
    folder = checkpoint_with_model(tmp_path, weights)
    model_dir = tmp_path / "deep" / "model"
    before = sorted(p for p in tmp_path.rglob("*"))
    assert Progress(folder, "s", "j").restore_model(model_dir) is False
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == [p for p in before if p.is_file()]
    assert "not a file name" in caplog.text


@pytest.mark.unit
@pytest.mark.parametrize(
    "doc",
    [
        [1, 2],
        "text",
        {"study_name": "s", "job_name": "j", "finished_trials": {"a": 1}},
        {"study_name": "s", "job_name": "j", "finished_trials": ["x"]},
    ],
)
def test_a_malformed_progress_file_is_ignored_with_a_warning(tmp_path, doc, caplog):
    (tmp_path / "progress.json").write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING):
        assert Progress(tmp_path, "s", "j").finished == []
    assert "Ignoring malformed checkpoint" in caplog.text


# --- a poisoned checkpoint is set aside and the job runs -----------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    "poison, fragment",
    [
        ({"weights_file": "../../outside.npz"}, "is not a file name in the model folder"),
        ({"params": {**DEFAULT_PARAMS, "n_units_l0": 4_000_000}}, "does not match model.json"),
        ({"format_version": True}, "format_version true"),
    ],
)
def test_a_checkpointed_model_failing_the_checks_is_set_aside_with_a_warning(
    tmp_path, caplog, poison, fragment
):
    folder = tmp_path / "checkpoints"
    checkpointed_model(folder, **poison)
    progress = Progress(folder, "spot", "spot")
    with caplog.at_level(logging.WARNING):
        target = progress.set_aside_bad_model()
    assert target == folder / f"model{SET_ASIDE_SUFFIX}" and (target / "model.json").is_file()
    assert not (folder / "model").exists()
    assert "Checkpointed model set aside" in caplog.text and fragment in caplog.text
    assert progress.restore_model(tmp_path / "model") is False


@pytest.mark.unit
def test_a_checkpointed_model_with_a_linked_weights_file_is_set_aside(tmp_path):
    folder = tmp_path / "checkpoints"
    model_dir = checkpointed_model(folder)
    record = artifact.read(model_dir)
    secret = tmp_path / "secret.npz"
    (model_dir / record.weights_file).rename(secret)
    (model_dir / record.weights_file).symlink_to(secret)
    assert Progress(folder, "spot", "spot").set_aside_bad_model() is not None


@pytest.mark.unit
def test_a_sound_checkpointed_model_stays(tmp_path):
    folder = tmp_path / "checkpoints"
    checkpointed_model(folder)
    progress = Progress(folder, "spot", "spot")
    assert progress.set_aside_bad_model() is None
    assert progress.restore_model(tmp_path / "model") is True
