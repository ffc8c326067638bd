"""model_dir -> the trained network (built by training's own function) and its forward pass.

The function is the one training used: ``entrypoint.network.build_network``, or the user's
``model-module`` that training packed into ``<model_dir>/code`` (``usermodule.network_builder``).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chainer
import numpy as np

from core.errors import UserError
from entrypoint import usermodule
from entrypoint.constants import MODEL_FORMAT_VERSION, MODEL_META_FILE
from entrypoint.keeper import read_meta
from serving.constants import USER_CODE_DIR
from serving.errors import ModelLoadError
from serving.forward import Forward, chainer_forward, numpy_forward

REQUIRED_META_KEYS = ("format_version", "weights_file", "params", "n_features", "n_classes")


@dataclass(frozen=True)
class Model:
    """A loaded network, its forward pass and the model.json it came from."""

    network: chainer.Link
    meta: dict[str, Any]
    forward: Forward

    @property
    def n_features(self) -> int:
        return int(self.meta["n_features"])

    @property
    def n_classes(self) -> int:
        return int(self.meta["n_classes"])


def load_model(model_dir: str | Path) -> Model:
    """Read model.json, rebuild its network and load its weights; any problem names the file."""
    model_dir = Path(model_dir)
    meta = _read_meta(model_dir)
    meta_path = model_dir / MODEL_META_FILE
    try:  # training's own function: ours, or the model-module it packed into <model_dir>/code
        build_network = usermodule.network_builder(meta, model_dir)
    except UserError as e:
        raise ModelLoadError(model_dir / USER_CODE_DIR, str(e)) from e
    try:
        network = build_network(meta["params"], int(meta["n_features"]), int(meta["n_classes"]))
    except Exception as e:  # KeyError, TypeError, ValueError... also from a user's build_network
        raise ModelLoadError(meta_path, f"params do not describe a network ({type(e).__name__}: {e})") from e
    weights_path = model_dir / meta["weights_file"]
    try:
        # chainer.serializers.load_npz, minus its allow_pickle=True: weights are plain arrays.
        with np.load(weights_path, allow_pickle=False) as npz:
            chainer.serializers.NpzDeserializer(npz, strict=True).load(network)
    except FileNotFoundError:
        raise ModelLoadError(weights_path, f"missing (named by {MODEL_META_FILE})") from None
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
        problem = f"corrupt or does not match {MODEL_META_FILE} ({type(e).__name__}: {e})"
        raise ModelLoadError(weights_path, problem) from e
    return Model(network=network, meta=meta, forward=numpy_forward(network) or chainer_forward(network))


def _read_meta(model_dir: Path) -> dict[str, Any]:
    meta_path = model_dir / MODEL_META_FILE
    try:
        meta = read_meta(model_dir)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(meta_path, f"not valid JSON ({e})") from e
    except OSError as e:
        raise ModelLoadError(meta_path, f"unreadable ({e.strerror})") from e
    if meta is None:
        raise ModelLoadError(meta_path, "missing: the folder holds no model (is model.tar.gz unpacked here?)")
    if not isinstance(meta, dict):
        raise ModelLoadError(meta_path, "not a JSON object")
    missing = [key for key in REQUIRED_META_KEYS if key not in meta]
    if missing:
        raise ModelLoadError(meta_path, f"lacks {', '.join(missing)}")
    if meta["format_version"] != MODEL_FORMAT_VERSION:
        problem = f"format_version {meta['format_version']!r}, this server reads {MODEL_FORMAT_VERSION}"
        raise ModelLoadError(meta_path, problem)
    weights = meta["weights_file"]
    if not isinstance(weights, str) or weights in ("", ".", "..") or Path(weights).name != weights:
        raise ModelLoadError(meta_path, f"weights_file {weights!r} is not a file name in the model folder")
    return meta


def predict_probabilities(model: Model, x: np.ndarray) -> np.ndarray:
    """Class probabilities (rows sum to 1) of a float32 batch: softmax of the network's output."""
    logits = model.forward(x)
    if not logits.flags.writeable or np.may_share_memory(logits, x):  # the softmax works in place
        logits = logits.copy()
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits
