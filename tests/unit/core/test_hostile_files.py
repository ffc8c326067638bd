"""Hostile files: recursion and size bombs in JSON, .npy headers, npz members and weights; each is
refused before it costs memory or time, with one short line naming what is wrong."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from core import artifact, modelcheck, npyfile
from core.errors import UserError
from devtools.localmodel import write_model
from entrypoint.job import hyperparameters
from entrypoint.model.checkpoint import Progress
from entrypoint.trials import data
from hpo_study.database import credentials
from tests.support.hostile import deep_json


def npy_bytes(header: str) -> bytes:
    """An .npy (format 1.0) with this header text, padded as numpy pads it, and no data."""
    text = header.encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


def npz_with(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in members.items():
            archive.writestr(name, body)
    return path


@pytest.mark.unit
def test_weights_declaring_more_than_they_hold_or_than_memory_allows_are_refused_unread(tmp_path):
    write_model(tmp_path, 64, 10)
    record = artifact.read(tmp_path)
    weights = tmp_path / record.weights_file
    with pytest.raises(artifact.ArtifactError, match="more than the 1000 allowed in memory"):
        modelcheck.check(tmp_path, max_bytes=1000)
    # A header claiming a 4,000,000 x 64 array in a member of a few bytes.
    npz_with(
        weights, {"0/W.npy": npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4000000, 64), }")}
    )
    with pytest.raises(artifact.ArtifactError, match=r"array '0/W' claims 1024000000 bytes but holds 0"):
        modelcheck.check(tmp_path)
    too_many = npyfile.MAX_WEIGHT_ARRAYS + 1
    npz_with(
        weights,
        {
            f"{i}.npy": npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }")
            for i in range(too_many)
        },
    )
    with pytest.raises(
        artifact.ArtifactError,
        match=f"{too_many} arrays, over the {npyfile.MAX_WEIGHT_ARRAYS} a model may have",
    ):
        modelcheck.check(tmp_path)


# --- training: hostile JSON and .npy headers -------------------------------------------------


@pytest.mark.unit
def test_an_npy_header_of_3000_nested_parentheses_is_a_short_line(tmp_path):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + "(" * 3000 + ")" * 3000 + ", }"
    path = npz_with(tmp_path / "train" / "data.npz", {"x.npy": npy_bytes(header), "y.npy": npy_bytes(header)})
    with pytest.raises(UserError) as info:
        data.load_channel("train", path.parent)
    assert str(info.value) == f"{path}: array 'x' has a malformed .npy header (ValueError)"


@pytest.mark.unit
def test_json_bombs_are_one_line_errors(tmp_path):
    path = tmp_path / "hyperparameters.json"
    path.write_text(deep_json())
    with pytest.raises(UserError, match="is not valid JSON: nested too deeply"):
        hyperparameters.load(path)
    with pytest.raises(UserError, match="Secret 's' is not JSON"):
        credentials.parse_secret("s", deep_json())
    (tmp_path / "progress.json").write_text(deep_json())
    assert Progress(tmp_path, "s", "j").finished == []


@pytest.mark.unit
def test_training_refuses_to_save_a_model_that_serve_would_refuse(monkeypatch, tmp_path):
    """The cap on arrays that serve reads is also applied when a model is saved (bring-your-own
    networks included), so a job never leaves a model that serve refuses."""
    import chainer
    import chainer.links as L

    from core import network

    net = chainer.Sequential(L.Linear(4, 3), L.BatchNormalization(3), L.Linear(3, 2))  # 9 arrays
    network.save_weights(tmp_path / "ok.npz", net)
    monkeypatch.setattr(network, "MAX_WEIGHT_ARRAYS", 8)
    with pytest.raises(UserError, match="The model has 9 arrays, over the 8 that serve loads"):
        network.save_weights(tmp_path / "too-many.npz", net)
    assert not (tmp_path / "too-many.npz").exists()
