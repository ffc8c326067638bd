"""Channels -> validated arrays.

A channel is a folder of ``.npz`` files. Each file holds a feature array (``x``, ``X`` or
``features``; any shape whose first axis is the example) and an integer label array (``y``,
``Y`` or ``labels``). Files are read in name order and concatenated.
"""

from __future__ import annotations

import dataclasses
import math
import zipfile
from pathlib import Path

import numpy as np

from core.errors import UserError
from core.memory import memory_budget
from core.npyfile import read_npy_header
from entrypoint.constants import CHANNEL_TEST, CHANNEL_TRAIN, FEATURE_ARRAY_NAMES, LABEL_ARRAY_NAMES

MAX_CLASSES = 100_000  # the output layer has one unit per class up to the largest label
MIB = 2**20
NPY_MAGIC = b"\x93NUMPY"


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


class _Budget:
    """Bytes still allowed for the arrays of every channel file, checked before reading any."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.used = max_bytes, 0

    def take(self, n_bytes: int, path: Path, what: str) -> None:
        self.used += n_bytes
        if self.used > self.max_bytes:
            raise UserError(
                f"{path}: {what} would bring the data to {self.used / MIB:.0f} MiB in memory, over the "
                f"{self.max_bytes / MIB:.0f} MiB this job allows (half of its memory)"
            )


def _member(archive: zipfile.ZipFile, names: tuple[str, ...], what: str, path: Path) -> str:
    found = {info.filename for info in archive.infolist()}
    for name in names:
        for member in (f"{name}.npy", name):  # numpy.savez adds .npy; numpy.load accepts both
            if member in found:
                return member
    arrays = ", ".join(sorted(n.removesuffix(".npy") for n in found)) or "none"
    raise UserError(f"{path}: no {what} array (expected one of {', '.join(names)}; found {arrays})")


def _read_member(archive: zipfile.ZipFile, member: str, path: Path, budget: _Budget) -> np.ndarray:
    """One array of an .npz, its header checked against the declared sizes before any read."""
    info = archive.getinfo(member)
    name = member.removesuffix(".npy")
    budget.take(info.file_size, path, f"array '{name}' ({info.file_size} bytes uncompressed)")
    with archive.open(info) as f:
        try:
            shape, dtype = read_npy_header(f)
        except ValueError as exc:
            raise UserError(f"{path}: array '{name}' has {exc}") from None
        if dtype.hasobject:
            raise UserError(
                f"{path}: not a readable .npz file (array '{name}' holds Python objects; "
                "pickled data is never loaded)"
            )
        n_bytes = math.prod(shape) * dtype.itemsize
        if n_bytes > info.file_size - f.tell():
            raise UserError(
                f"{path}: array '{name}' claims shape {shape} of {dtype} ({n_bytes} bytes), "
                f"but holds only {info.file_size - f.tell()} bytes"
            )
    budget.take(math.prod(shape) * 4, path, f"array '{name}' as 32-bit values")  # after conversion
    with archive.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _read_file(path: Path, budget: _Budget) -> Split:
    try:
        with zipfile.ZipFile(path) as archive:
            x = _read_member(archive, _member(archive, FEATURE_ARRAY_NAMES, "feature", path), path, budget)
            y = _read_member(archive, _member(archive, LABEL_ARRAY_NAMES, "label", path), path, budget)
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            is_npy = f.read(len(NPY_MAGIC)) == NPY_MAGIC
        what = "a single .npy array: save with numpy.savez" if is_npy else "not a zip archive"
        raise UserError(f"{path}: not a readable .npz file ({what})") from None
    except UserError:
        raise
    except (OSError, ValueError, EOFError, zipfile.LargeZipFile, NotImplementedError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if x.ndim < 1 or x.shape[0] == 0:
        raise UserError(f"{path}: the feature array is empty")
    if y.ndim != 1 or len(x) != len(y):
        raise UserError(f"{path}: {len(x)} feature rows but labels of shape {y.shape}")
    if math.prod(x.shape[1:]) == 0:
        raise UserError(f"{path}: the feature array of shape {x.shape} has no feature columns")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise UserError(f"{path}: features must be numeric, not {x.dtype}")
    x = x.reshape(len(x), -1).astype(np.float32, copy=False)  # float32 already: no second copy
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


def load_channel(name: str, folder: str | Path | None, budget: _Budget | None = None) -> Split:
    """Read every .npz file of one channel folder."""
    budget = budget or _Budget(memory_budget())
    if folder is None or not Path(folder).is_dir():
        raise UserError(f"Missing channel '{name}': give it as an input channel of the training job")
    files = sorted(p for p in Path(folder).rglob("*.npz") if p.is_file())
    if not files:
        raise UserError(f"Channel '{name}' ({folder}) holds no .npz file")
    parts = [_read_file(p, budget) for p in files]
    widths = {p.x.shape[1] for p in parts}
    if len(widths) != 1:
        raise UserError(f"Channel '{name}': files have different feature widths {sorted(widths)}")
    if len(parts) == 1:  # the common case: no copy of the whole channel
        return parts[0]
    return Split(x=np.concatenate([p.x for p in parts]), y=np.concatenate([p.y for p in parts]))


def load(channel_dirs: dict[str, str], max_bytes: int | None = None) -> Dataset:
    """Load and cross-check the train and test channels, within ``max_bytes`` (default:
    :func:`memory_budget`) of arrays in memory, checked before anything is decompressed."""
    budget = _Budget(memory_budget() if max_bytes is None else max_bytes)
    train = load_channel(CHANNEL_TRAIN, channel_dirs.get(CHANNEL_TRAIN), budget)
    test = load_channel(CHANNEL_TEST, channel_dirs.get(CHANNEL_TEST), budget)
    if train.x.shape[1] != test.x.shape[1]:
        raise UserError(
            f"Channels 'train' and 'test' differ in feature width ({train.x.shape[1]} vs {test.x.shape[1]})"
        )
    n_classes = int(max(train.y.max(), test.y.max())) + 1
    if n_classes < 2:
        raise UserError("Labels hold a single class: nothing to classify")
    return Dataset(train=train, test=test, n_features=train.x.shape[1], n_classes=n_classes)
