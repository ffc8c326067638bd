"""A loaded network -> its forward pass as a few numpy calls, for the layers build_network uses.

Chainer spends ~25 us of graph bookkeeping per layer call even with backprop off; for a small
MLP that is 90% of the forward time. This replays the very same Sequential (same layers, same
order, same weight arrays, the same arithmetic as F.linear and F.relu on CPU) without that
bookkeeping. Any layer it does not know makes it return None: the caller then runs Chainer.
Tests pin it to Chainer's own output.
"""

from __future__ import annotations

from collections.abc import Callable

import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np

Forward = Callable[[np.ndarray], np.ndarray]


def _linear(layer: L.Linear) -> Forward:
    W = layer.W.array
    b = None if layer.b is None else layer.b.array

    def linear(x: np.ndarray) -> np.ndarray:
        y = x.dot(W.T)
        if b is not None:
            y += b
        return y

    return linear


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0, dtype=x.dtype)


def numpy_forward(network: chainer.Link) -> Forward | None:
    """The network's forward without Chainer's graph, or None if it has a layer we do not replay."""
    if not isinstance(network, chainer.Sequential):
        return None
    steps: list[Forward] = []
    for layer in network:
        if isinstance(layer, L.Linear) and layer.W.array is not None:
            steps.append(_linear(layer))
        elif layer is F.relu:
            steps.append(_relu)
        else:
            return None

    def forward(x: np.ndarray) -> np.ndarray:
        for step in steps:
            x = step(x)
        return x

    return forward


def chainer_forward(network: chainer.Link) -> Forward:
    """Chainer's own forward, in inference mode (the reference, and the fallback)."""

    def forward(x: np.ndarray) -> np.ndarray:
        with chainer.using_config("train", False), chainer.using_config("enable_backprop", False):
            return network(x).array

    return forward
