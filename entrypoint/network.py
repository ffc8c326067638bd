"""The one definition of the network, used by training and by serving."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import chainer
import chainer.functions as F
import chainer.links as L


def build_network(params: Mapping[str, Any], n_features: int, n_classes: int) -> chainer.Sequential:
    """Build the MLP described by a trial's parameters (``n_layers``, ``n_units_l{i}``).

    Input sizes are given explicitly so that every weight exists before ``load_npz``.
    """
    layers: list[Any] = []
    n_in = n_features
    for i in range(int(params["n_layers"])):
        n_units = int(params[f"n_units_l{i}"])
        layers += [L.Linear(n_in, n_units), F.relu]
        n_in = n_units
    layers.append(L.Linear(n_in, n_classes))
    return chainer.Sequential(*layers)
