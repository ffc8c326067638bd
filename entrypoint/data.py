"""Channels -> validated arrays.

A channel is a folder of ``.npz`` files. Each file holds a feature array (``x``, ``X`` or
``features``; any shape whose first axis is the example) and an integer label array (``y``,
``Y`` or ``labels``). Files are read in name order and concatenated.
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import numpy as np

from entrypoint.constants import CHANNEL_TEST, CHANNEL_TRAIN, FEATURE_ARRAY_NAMES, LABEL_ARRAY_NAMES
from entrypoint.errors import UserError

MAX_CLASSES = 100_000  # the output layer has one unit per class up to the largest label


@dataclasses.dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32, shape (n, n_features)
    y: np.ndarray  # int32, shape (n,)


@dataclasses.dataclass(frozen=True)
class Dataset:
    train: Split
    test: Split
    n_features: int
    n_classes: int


def _pick(arrays: np.lib.npyio.NpzFile, names: tuple[str, ...], what: str, path: Path) -> np.ndarray:
    for name in names:
        if name in arrays.files:
            return arrays[name]
    raise UserError(
        f"{path}: no {what} array (expected one of {', '.join(names)}; found {', '.join(arrays.files) or 'none'})"
    )


def _read_file(path: Path) -> Split:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            x = _pick(arrays, FEATURE_ARRAY_NAMES, "feature", path)
            y = _pick(arrays, LABEL_ARRAY_NAMES, "label", path)
    except UserError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({exc})") from None
    if x.ndim < 1 or x.shape[0] == 0:
        raise UserError(f"{path}: the feature array is empty")
    if y.ndim != 1 or len(x) != len(y):
        raise UserError(f"{path}: {len(x)} feature rows but labels of shape {y.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise UserError(f"{path}: features must be numeric, not {x.dtype}")
    x = x.reshape(len(x), -1).astype(np.float32)
    if not np.isfinite(x).all():
        raise UserError(f"{path}: features contain NaN or infinite values")
    if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{path}: labels must be integers, not {y.dtype}")
    if y.min() < 0 or y.max() >= MAX_CLASSES:
        raise UserError(
            f"{path}: labels must be class indices from 0 to {MAX_CLASSES - 1} (found {y.min()}..{y.max()})"
        )
    return Split(x=x, y=y.astype(np.int32))


def load_channel(name: str, folder: str | Path | None) -> Split:
    """Read every .npz file of one channel folder."""
    if folder is None or not Path(folder).is_dir():
        raise UserError(f"Missing channel '{name}': give it as an input channel of the training job")
    files = sorted(p for p in Path(folder).rglob("*.npz") if p.is_file())
    if not files:
        raise UserError(f"Channel '{name}' ({folder}) holds no .npz file")
    parts = [_read_file(p) for p in files]
    widths = {p.x.shape[1] for p in parts}
    if len(widths) != 1:
        raise UserError(f"Channel '{name}': files have different feature widths {sorted(widths)}")
    return Split(x=np.concatenate([p.x for p in parts]), y=np.concatenate([p.y for p in parts]))


def load(channel_dirs: dict[str, str]) -> Dataset:
    """Load and cross-check the train and test channels."""
    train = load_channel(CHANNEL_TRAIN, channel_dirs.get(CHANNEL_TRAIN))
    test = load_channel(CHANNEL_TEST, channel_dirs.get(CHANNEL_TEST))
    if train.x.shape[1] != test.x.shape[1]:
        raise UserError(
            f"Channels 'train' and 'test' differ in feature width ({train.x.shape[1]} vs {test.x.shape[1]})"
        )
    n_classes = int(max(train.y.max(), test.y.max())) + 1
    if n_classes < 2:
        raise UserError("Labels hold a single class: nothing to classify")
    return Dataset(train=train, test=test, n_features=train.x.shape[1], n_classes=n_classes)
