"""The one definition of the built-in network and of its weights file, for training and serving."""

from __future__ import annotations

import collections
import io
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np

from core.errors import UserError
from core.npyfile import MAX_WEIGHT_ARRAYS

# What a weights file that is not what model.json says can raise while it is read.
WEIGHTS_ERRORS = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile)


def _positive_int(params: Mapping[str, Any], key: str) -> int:
    value = params.get(key)
    if type(value) is not int or value < 1:
        raise ValueError(f"params[{key!r}] is {str(value)[:40]!r}, not a positive integer")
    return value


def expected_shapes(params: Mapping[str, Any], n_features: int, n_classes: int) -> list[tuple[int, ...]]:
    """The array shapes of :func:`build_network`'s network for these parameters, computed
    without building it (so a model.json describing a huge network costs nothing); a parameter
    of the wrong type or out of range is a ValueError."""
    n_layers = _positive_int(params, "n_layers")
    if 2 * (n_layers + 1) > MAX_WEIGHT_ARRAYS:
        raise ValueError(f"n_layers {n_layers} is over the {MAX_WEIGHT_ARRAYS // 2 - 1} a model may have")
    shapes: list[tuple[int, ...]] = []
    n_in = n_features
    for i in range(n_layers + 1):
        n_out = _positive_int(params, f"n_units_l{i}") if i < n_layers else n_classes
        shapes += [(n_out, n_in), (n_out,)]  # Linear's W and b
        n_in = n_out
    return shapes


def check_shapes(
    expected: list[tuple[int, ...]], found: Mapping[str, tuple[tuple[int, ...], np.dtype]]
) -> None:
    """ValueError naming a shape the weights file lacks or has beyond what the network needs.
    (Shapes, not names: loading the weights then matches each array to its link, strictly.)"""
    missing = collections.Counter(expected)
    missing.subtract(shape for shape, _ in found.values())
    lacking = sorted(shape for shape, n in missing.items() if n > 0)
    if lacking:
        raise ValueError(f"no array of shape {lacking[0]}, which params call for")
    extra = sorted((name for name, (shape, _) in found.items() if missing[shape] < 0), key=str)
    if extra:
        raise ValueError(
            f"array {extra[0][:100]!r} of shape {found[extra[0]][0]} is not part of the network params describe"
        )


def all_finite(network: chainer.Link) -> bool:
    """True when every weight of the network is a finite number."""
    return all(np.isfinite(param.array).all() for param in network.params())


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
    """Write the network's arrays in Chainer's npz layout (``trial-<n>.npz``).

    Built in memory, then written in one call: numpy's savez leaves its ZipFile open when a
    write fails (a full disk), and its ``__del__`` then logs a second traceback.
    """
    arrays = sum(1 for _ in network.namedparams()) + sum(
        len(link._persistent)
        for link in network.links()  # BatchNorm's running statistics
    )
    if arrays > MAX_WEIGHT_ARRAYS:
        raise UserError(f"The model has {arrays} arrays, over the {MAX_WEIGHT_ARRAYS} that serve loads")
    buffer = io.BytesIO()
    chainer.serializers.save_npz(buffer, network)
    if isinstance(file, (str, Path)):
        Path(file).write_bytes(buffer.getbuffer())
    else:
        file.write(buffer.getbuffer())


def load_weights(path: str | Path, network: chainer.Link) -> None:
    """Fill ``network`` from an npz file; every array must be there and have its shape.

    chainer.serializers.load_npz, minus its allow_pickle=True: weights are plain arrays, and a
    pickle in a model file must never run. Raises one of WEIGHTS_ERRORS on a file that does not fit.
    """
    with np.load(path, allow_pickle=False) as npz:
        chainer.serializers.NpzDeserializer(npz, strict=True).load(network)
