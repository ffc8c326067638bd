"""In-process checks of the model loader and forward pass that the HTTP tests rely on."""

from __future__ import annotations

import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np
import pytest

from core.network import build_network
from devtools.localmodel import DEFAULT_PARAMS, write_model
from serving.forward import chainer_forward, numpy_forward
from serving.model import load_model, predict_probabilities

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
