"""Hostile files: a poisoned checkpoint, recursion and size bombs in JSON, .npy headers, npz
members and model.json, and failure lines longer than SageMaker keeps. Each is refused before it
costs memory or time, with one short line naming what is wrong."""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core import artifact, modelcheck, npyfile
from core.errors import UserError
from devtools.localmodel import DEFAULT_PARAMS, write_model
from entrypoint import credentials, data, failure
from entrypoint import settings as settings_mod
from entrypoint.checkpoint import SET_ASIDE_SUFFIX, Progress
from serving.errors import ModelLoadError
from serving.model import load_model
from tests.support.jobs import finish, run_train, start_job, tmpfs

DEEP = 200_000  # nesting depth of the JSON bombs: far past the interpreter's recursion limit


def deep_json(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


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


def edit_model_json(model_dir: Path, **changes) -> None:
    doc = json.loads((model_dir / "model.json").read_text())
    doc.update(changes)
    (model_dir / "model.json").write_text(json.dumps(doc))


def refused_before_building(model_dir: Path, fragment: str, monkeypatch, builds: bool = False) -> str:
    """load_model refuses ``model_dir`` with ``fragment`` in its one-line error; unless ``builds``,
    before any network was built (the bombs cost neither time nor memory)."""
    from serving import model as serving_model

    built = []
    builder = serving_model.usercode.network_builder
    monkeypatch.setattr(
        serving_model.usercode,
        "network_builder",
        lambda *args: built.append(args) or builder(*args),
    )
    with pytest.raises(ModelLoadError) as info:
        load_model(model_dir)
    assert bool(built) == builds, "a network was built before the model folder was checked"
    assert fragment in str(info.value), str(info.value)
    assert len(str(info.value)) < 1024
    return str(info.value)


# --- serve: model.json checked against the weights before anything is built --------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"params": {**DEFAULT_PARAMS, "n_units_l0": 4_000_000}}, "does not match model.json"),
        ({"params": {**DEFAULT_PARAMS, "n_layers": 20_000}}, "n_layers 20000 is over the 499"),
        (
            {"params": {**DEFAULT_PARAMS, "n_layers": True}},
            "params['n_layers'] is 'True', not a positive integer",
        ),
        ({"params": {**DEFAULT_PARAMS, "n_units_l1": "64"}}, "params['n_units_l1'] is '64'"),
        ({"format_version": True}, "format_version true, this image reads 1 (an integer)"),
        ({"format_version": 1.0}, "format_version 1.0, this image reads 1"),
        ({"n_classes": 11}, "does not match model.json: no array of shape (11,)"),
    ],
)
def test_serve_refuses_a_model_json_that_does_not_fit_its_weights_before_building(
    tmp_path, changes, fragment, monkeypatch
):
    write_model(tmp_path, 64, 10)
    edit_model_json(tmp_path, **changes)
    refused_before_building(tmp_path, fragment, monkeypatch)


@pytest.mark.unit
def test_serve_refuses_a_model_json_nested_100000_deep(tmp_path, monkeypatch):
    write_model(tmp_path, 64, 10)
    (tmp_path / "model.json").write_text(deep_json(100_000))
    refused_before_building(tmp_path, "not valid JSON (nested too deeply)", monkeypatch)


@pytest.mark.unit
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_serve_refuses_non_finite_weights_at_start(tmp_path, value, monkeypatch):
    import chainer

    net = write_model(tmp_path, 64, 10)
    record = artifact.read(tmp_path)
    next(iter(net.params())).array[0, 0] = value
    chainer.serializers.save_npz(str(tmp_path / record.weights_file), net)
    refused_before_building(tmp_path, "holds NaN or infinite weights", monkeypatch, builds=True)


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


# --- training: hostile JSON and .npy headers, failure lines cut to 1,024 characters ------------


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
        settings_mod.load(path)
    with pytest.raises(UserError, match="Secret 's' is not JSON"):
        credentials.parse_secret("s", deep_json())
    (tmp_path / "progress.json").write_text(deep_json())
    assert Progress(tmp_path, "s", "j").finished == []


@pytest.mark.unit
def test_every_failure_line_is_cut_to_1024_characters_quoted_values_first(tmp_path):
    long_value = "v" * 5000
    message = f"Hyperparameter 'study-name' is {long_value!r}: too long (keep it under 64 characters)"
    fitted = failure.fit(message)
    assert len(fitted) < 1024 and fitted.endswith(": too long (keep it under 64 characters)")
    assert "'vvvvv" in fitted and "...'" in fitted
    unquoted = failure.fit("x" * 5000)
    assert len(unquoted) == 1024 and unquoted.endswith("...")
    failure.write(message, tmp_path)
    assert (tmp_path / "failure").read_text() == fitted
    # Apostrophes are no quotes: the advice between "job's" and "server's" is kept whole.
    prose = failure.fit(f"The job's database refused: {'x' * 1100} (check the server's log) final advice")
    assert prose.startswith("The job's database refused: xxx") and prose.endswith("...")
    quoted_after_apostrophe = failure.fit(f"The job's value {long_value!r} is refused (see the server's log)")
    assert quoted_after_apostrophe.endswith("...' is refused (see the server's log)")


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


def checkpointed_model(folder: Path, **changes) -> Path:
    model_dir = folder / "model"
    write_model(model_dir, 64, 10)
    edit_model_json(model_dir, job_name="spot", study_name="spot", **changes)
    return model_dir


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


# --- smaller: bad storage URLs, a full model or output folder ------------------------------------


@pytest.mark.unit
def test_a_storage_url_with_a_port_that_is_not_a_number_is_one_line():
    from entrypoint import storage
    from tests.support.cli import run_cli

    s = settings_mod.parse({"storage": "mysql://root@127.0.0.1:notaport/x"})
    with pytest.raises(UserError, match=r"is not a database URL .*\(its port is not a number\)"):
        storage.resolve(s, "/nonexistent")
    result = run_cli("status", "--study", "s", "--storage", "mysql://root@127.0.0.1:notaport/x")
    assert result.code == 1 and "its port is not a number" in result.err and "Traceback" not in result.err


@pytest.mark.services
def test_driver_options_the_driver_refuses_are_one_line(mysql_db):
    from entrypoint import search, storage

    s = settings_mod.parse({"storage": f"{mysql_db.url}?ssl_key=/nonexistent", "db-retry-timeout": "2"})
    db = storage.resolve(s, "/nonexistent")
    with pytest.raises(UserError, match="The database driver refused the connect options .*ssl_key"):
        storage.join_study(s, db, search.make_sampler(s, 0), search.make_pruner(s))


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
