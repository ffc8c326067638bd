"""A small convolutional network for 8x8 digit images, tuned by the image's entry point.

Train with the hyperparameter ``model-module=conv_digits`` and this folder as the
Estimator's ``source_dir``; ``serve`` rebuilds the network from the packed copy of this file.
Features arrive flattened (64 wide); the network reshapes them into 1x8x8 images.
"""

from __future__ import annotations

import math

import chainer
import chainer.functions as F
import chainer.links as L


def suggest_params(trial) -> dict:
    """The search space: channels of the two convolutions, the hidden layer and the rate."""
    trial.suggest_int("channels", 4, 32, log=True)
    trial.suggest_int("hidden", 16, 128, log=True)
    trial.suggest_float("dropout", 0.0, 0.5)
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    return dict(trial.params)


class ConvNet(chainer.Chain):
    def __init__(self, channels: int, hidden: int, dropout: float, side: int, n_classes: int) -> None:
        super().__init__()
        self.side, self.dropout = side, dropout
        with self.init_scope():
            self.conv1 = L.Convolution2D(1, channels, ksize=3, pad=1)
            self.conv2 = L.Convolution2D(channels, 2 * channels, ksize=3, pad=1)
            self.fc = L.Linear(2 * channels * (side // 2) ** 2, hidden)
            self.out = L.Linear(hidden, n_classes)

    def forward(self, x):
        h = F.reshape(x, (-1, 1, self.side, self.side))
        h = F.relu(self.conv1(h))
        h = F.max_pooling_2d(F.relu(self.conv2(h)), 2)
        h = F.dropout(F.relu(self.fc(h)), self.dropout)
        return self.out(h)


def build_network(params: dict, n_features: int, n_classes: int) -> chainer.Link:
    side = math.isqrt(n_features)
    if side * side != n_features:
        raise ValueError(f"conv_digits needs square images, got {n_features} features")
    return ConvNet(int(params["channels"]), int(params["hidden"]), float(params["dropout"]), side, n_classes)


def make_optimizer(params: dict, model: chainer.Link) -> chainer.Optimizer:
    optimizer = chainer.optimizers.Adam(alpha=params["lr"])
    optimizer.setup(model)
    return optimizer
