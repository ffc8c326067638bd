"""In-process checks of the model loader and forward pass that the HTTP tests rely on."""

from __future__ import annotations

from pathlib import Path

import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np
import pytest

from core import artifact
from core.network import build_network
from devtools.localmodel import DEFAULT_PARAMS, write_model
from serving.errors import ModelLoadError
from serving.forward import chainer_forward, numpy_forward
from serving.model import load_model, predict_probabilities
from tests.support.hostile import deep_json, edit_model_json

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "params",
    [
        {"n_layers": 1, "n_units_l0": 4},
        {"n_layers": 2, "n_units_l0": 128, "n_units_l1": 7},
        {"n_layers": 3, "n_units_l0": 33, "n_units_l1": 5, "n_units_l2": 128},
    ],
)
def test_numpy_forward_is_chainers_forward_bit_for_bit(params):
    network = build_network(params, 20, 6)
    x = np.random.default_rng(0).standard_normal((50, 20)).astype(np.float32)
    fast = numpy_forward(network)
    assert fast is not None
    np.testing.assert_array_equal(fast(x), chainer_forward(network)(x))


def test_unknown_layers_fall_back_to_chainer():
    assert numpy_forward(chainer.Sequential(L.Linear(3, 4), F.sigmoid, L.Linear(4, 2))) is None
    assert numpy_forward(L.Linear(3, 4)) is None


def test_loaded_model_predicts_like_the_network_written(tmp_path):
    network = write_model(tmp_path, 784, 10)
    model = load_model(tmp_path)
    assert (model.n_features, model.n_classes) == (784, 10)
    assert model.record.params == DEFAULT_PARAMS and model.record.weights_file == "trial-0.npz"
    assert model.meta == model.record.to_dict()  # the dict user hooks may read
    x = np.random.default_rng(1).random((9, 784), dtype=np.float32)
    with chainer.using_config("train", False):
        reference = F.softmax(network(x)).array
    probs = predict_probabilities(model, x)
    np.testing.assert_allclose(probs, reference, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


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
