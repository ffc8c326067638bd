""".npy headers and .npz members read without trusting them: sizes and nesting checked before
anything is parsed at length or decompressed. No Chainer here: training's data reader uses it.

Hand-written around numpy's own header readers: numpy checks a header's length but quotes the
whole header in its error, and has no check of a member's declared size against what it holds.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

# Far past any network this image trains or serves, bring-your-own ones included (2,000
# BatchNorm layers); training refuses to save a model over it (core/network.save_weights), so a
# model that trained is never one that serve refuses.
MAX_WEIGHT_ARRAYS = 10_000
NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
NPY_MAX_HEADER_BYTES = 4_096  # numpy writes ~128; its own limit is 10,000


def read_npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """An .npy member's shape and dtype, read from its header alone; a header numpy cannot
    parse is a short ValueError (numpy's own quotes the whole header)."""
    version = np.lib.format.read_magic(f)
    if version not in NPY_HEADER_READERS:
        raise ValueError(f".npy format version {version}, not 1.0 or 2.0")
    try:
        shape, _, dtype = NPY_HEADER_READERS[version](f, max_header_size=NPY_MAX_HEADER_BYTES)
    except (ValueError, SyntaxError, RecursionError, MemoryError) as exc:
        raise ValueError(f"a malformed .npy header ({type(exc).__name__})") from None
    return tuple(shape), dtype


def weight_shapes(path: str | Path, max_bytes: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each array of a weights file (name -> shape, dtype) from the headers only, nothing
    decompressed beyond them. Refused (ValueError): more than MAX_WEIGHT_ARRAYS arrays, objects
    (pickles), an array larger than the bytes its member holds, and arrays that would take more
    than ``max_bytes`` in memory, all before any array is read."""
    shapes: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    total = 0
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        if len(infos) > MAX_WEIGHT_ARRAYS:
            raise ValueError(f"{len(infos)} arrays, over the {MAX_WEIGHT_ARRAYS} a model may have")
        for info in infos:
            name = info.filename.removesuffix(".npy")
            with archive.open(info) as f:
                try:
                    shape, dtype = read_npy_header(f)
                except ValueError as exc:
                    raise ValueError(f"array {name[:100]!r}: {exc}") from None
                held = info.file_size - f.tell()
            if dtype.hasobject:
                raise ValueError(f"array {name[:100]!r} holds Python objects (never unpickled)")
            n_bytes = math.prod(shape) * dtype.itemsize
            if n_bytes > held:
                raise ValueError(f"array {name[:100]!r} claims {n_bytes} bytes but holds {held}")
            total += n_bytes
            if total > max_bytes:
                raise ValueError(f"arrays of over {total} bytes, more than the {max_bytes} allowed in memory")
            shapes[name] = (shape, dtype)
    return shapes
