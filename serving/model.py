"""model_dir -> the trained network (built by training's own function) and its forward pass.

model.json is read and checked by core/artifact.py; the network function is the one training
used (core/usercode.py: ``core.network.build_network``, or the user's ``model-module`` that
training packed into ``<model_dir>/code``); the weights are read by core/network.py, unpickled
never. Nothing here imports Optuna or the training toolkit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chainer
import numpy as np

from core import artifact, modelcheck, network, usercode
from core.artifact import ModelRecord
from serving.errors import ModelLoadError
from serving.forward import Forward, chainer_forward, numpy_forward


@dataclass(frozen=True)
class Model:
    """A loaded network, its forward pass and the model.json record it came from."""

    network: chainer.Link
    record: ModelRecord
    forward: Forward

    @property
    def n_features(self) -> int:
        return self.record.n_features

    @property
    def n_classes(self) -> int:
        return self.record.n_classes

    @property
    def meta(self) -> dict[str, Any]:
        """model.json as a dict: what a user's hooks received before the typed record."""
        return self.record.to_dict()


def load_model(model_dir: str | Path) -> Model:
    """Check model.json and the weights file's headers against each other (core/modelcheck.py),
    then rebuild the network and load its weights; any problem names the file. Nothing is built
    before the checks pass; weights that are not all finite numbers are refused."""
    model_dir = Path(model_dir)
    record = _read_record(model_dir)
    meta_path = model_dir / artifact.META_FILE
    try:  # training's own function: ours, or the model-module it packed into <model_dir>/code
        build_network = usercode.network_builder(record, model_dir)
    except usercode.UserCodeError as e:
        raise ModelLoadError(model_dir / artifact.CODE_DIR, str(e)) from e
    try:
        net = build_network(record.params, record.n_features, record.n_classes)
    except Exception as e:  # KeyError, TypeError, ValueError... also from a user's build_network
        raise ModelLoadError(meta_path, f"params do not describe a network ({type(e).__name__}: {e})") from e
    weights_path = model_dir / record.weights_file
    try:
        network.load_weights(weights_path, net)
    except FileNotFoundError:
        raise ModelLoadError(weights_path, f"missing (named by {artifact.META_FILE})") from None
    except network.WEIGHTS_ERRORS as e:
        problem = f"corrupt or does not match {artifact.META_FILE} ({type(e).__name__}: {e})"
        raise ModelLoadError(weights_path, problem) from e
    if not network.all_finite(net):
        raise ModelLoadError(weights_path, "holds NaN or infinite weights: every answer would be NaN")
    return Model(network=net, record=record, forward=numpy_forward(net) or chainer_forward(net))


def _read_record(model_dir: Path) -> ModelRecord:
    """model_dir's committed record, checked with its weights file; a missing or invalid
    model.json, or weights that do not match it, are a ModelLoadError."""
    if not (model_dir / artifact.META_FILE).exists():
        problem = "missing: the folder holds no model (is model.tar.gz unpacked here?)"
        raise ModelLoadError(model_dir / artifact.META_FILE, problem)
    try:
        return modelcheck.check(model_dir)
    except artifact.ArtifactError as e:
        raise ModelLoadError(e.path, e.problem) from e


def predict_probabilities(model: Model, x: np.ndarray) -> np.ndarray:
    """Class probabilities (rows sum to 1) of a float32 batch: softmax of the network's output."""
    logits = model.forward(x)
    if not logits.flags.writeable or np.may_share_memory(logits, x):  # the softmax works in place
        logits = logits.copy()
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits
