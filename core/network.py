"""The one definition of the built-in network and of its weights file, for training and serving."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np

# What a weights file that is not what model.json says can raise while it is read.
WEIGHTS_ERRORS = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile)


def build_network(params: Mapping[str, Any], n_features: int, n_classes: int) -> chainer.Sequential:
    """Build the MLP described by a trial's parameters (``n_layers``, ``n_units_l{i}``).

    Input sizes are given explicitly so that every weight exists before the weights are loaded.
    """
    layers: list[Any] = []
    n_in = n_features
    for i in range(int(params["n_layers"])):
        n_units = int(params[f"n_units_l{i}"])
        layers += [L.Linear(n_in, n_units), F.relu]
        n_in = n_units
    layers.append(L.Linear(n_in, n_classes))
    return chainer.Sequential(*layers)


def save_weights(file: IO[bytes] | str | Path, network: chainer.Link) -> None:
    """Write the network's arrays in Chainer's npz layout (``trial-<n>.npz``)."""
    chainer.serializers.save_npz(file, network)


def load_weights(path: str | Path, network: chainer.Link) -> None:
    """Fill ``network`` from an npz file; every array must be there and have its shape.

    chainer.serializers.load_npz, minus its allow_pickle=True: weights are plain arrays, and a
    pickle in a model file must never run. Raises one of WEIGHTS_ERRORS on a file that does not fit.
    """
    with np.load(path, allow_pickle=False) as npz:
        chainer.serializers.NpzDeserializer(npz, strict=True).load(network)
