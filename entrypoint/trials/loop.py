"""One network's training: minibatches sliced from arrays, one batched evaluation per epoch.

Chainer's Trainer moves every example through ``TupleDataset`` items and ``concat_examples``
(14% of a trial, profiled) and its Evaluator adds 9%; it also averages batch means, which
over-weights the last partial batch of the test set. This loop shuffles the arrays once per
epoch, trains on contiguous slices, and evaluates the whole test set in large chunks, counting
correct examples: the validation accuracy is exact. Hand-written: Chainer has no array-slice
training loop, and the loop is a dozen lines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import chainer
import chainer.functions as F
import numpy as np

from entrypoint.trials.data import Split

EVAL_CHUNK = 4096  # test examples per forward pass: large batches, bounded memory


def evaluate(predictor: chainer.Link, split: Split) -> tuple[float, float]:
    """Mean softmax cross-entropy and the exact fraction of correctly classified examples."""
    loss_sum, correct = 0.0, 0
    with chainer.using_config("train", False), chainer.no_backprop_mode():
        for start in range(0, len(split.y), EVAL_CHUNK):
            x, t = split.x[start : start + EVAL_CHUNK], split.y[start : start + EVAL_CHUNK]
            logits = predictor(x)
            loss_sum += float(F.softmax_cross_entropy(logits, t, reduce="no").array.sum())
            correct += int((logits.array.argmax(axis=1) == t).sum())
    n = len(split.y)
    return loss_sum / n, correct / n


def train(
    model: chainer.links.Classifier,
    optimizer: chainer.Optimizer,
    train_split: Split,
    test_split: Split,
    epochs: int,
    batch_size: int,
    on_epoch: Callable[[int, Mapping[str, float]], None],
    on_iteration: Callable[[], None] = lambda: None,
) -> None:
    """Train ``model`` (a Classifier around the predictor) for ``epochs`` epochs.

    ``on_iteration`` runs before every update (stop and deadline checks); ``on_epoch`` gets the
    epoch number (from 1) and Chainer-style keys: ``main/loss``, ``main/accuracy`` (means over
    the epoch's training examples), ``validation/main/loss``, ``validation/main/accuracy``.
    """
    n = len(train_split.y)
    for epoch in range(1, epochs + 1):
        order = np.random.permutation(n)
        xs, ts = train_split.x[order], train_split.y[order]
        loss_sum = accuracy_sum = 0.0
        for start in range(0, n, batch_size):
            on_iteration()
            x, t = xs[start : start + batch_size], ts[start : start + batch_size]
            optimizer.update(model, x, t)
            loss_sum += float(model.loss.array) * len(t)
            accuracy_sum += float(model.accuracy.array) * len(t)
        val_loss, val_accuracy = evaluate(model.predictor, test_split)
        on_epoch(
            epoch,
            {
                "main/loss": loss_sum / n,
                "main/accuracy": accuracy_sum / n,
                "validation/main/loss": val_loss,
                "validation/main/accuracy": val_accuracy,
            },
        )
