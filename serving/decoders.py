"""Request body -> a float32 batch (rows x features): one small decoder per content type.

Every decoder refuses rather than guesses: pickles and object arrays are never loaded, and
non-numeric, non-finite, empty or ragged input is a BadInput (400) with a short message.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from serving import content_types
from serving.errors import BadInput, UnsupportedMediaType

NUMERIC_KINDS = "iuf"  # signed, unsigned, float; not bool, complex, str, object or structured
NPY_MAGIC = b"\x93NUMPY"
NPY_PREFIX_BYTES = 10  # magic, major, minor, 2-byte header length (4 bytes from version 2)
NPY_MAX_HEADER_BYTES = 10_000  # numpy's own default limit


def _reject_constant(name: str) -> float:
    raise BadInput(f"JSON holds {name}: values must be finite numbers")


def decode_json(body: bytes) -> np.ndarray:
    """A list of rows, or {"instances": [...]} as in TensorFlow Serving and SageMaker samples."""
    try:
        doc = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadInput(f"body is not valid JSON ({type(e).__name__})") from None
    if isinstance(doc, dict):
        if "instances" not in doc:
            raise BadInput('a JSON object needs an "instances" list')
        doc = doc["instances"]
    if not isinstance(doc, list):
        raise BadInput('JSON must be a list of rows or {"instances": [...]}')
    try:
        return np.array(doc)
    except ValueError:  # ragged nesting
        raise BadInput("JSON rows are not all the same shape") from None


def decode_jsonlines(body: bytes) -> np.ndarray:
    """One example per line, each a JSON list of numbers (any nesting); blank lines are skipped.

    This is what the SageMaker SDK's JSONLinesSerializer sends, and what batch transform sends
    with SplitType=Line: records joined by newlines.
    """
    rows = []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:
            raise BadInput(f"line {number} is not valid JSON ({type(e).__name__})") from None
        if not isinstance(row, list):
            raise BadInput(f"line {number}: each line must be a JSON list of numbers (one example)")
        rows.append(row)
    if not rows:
        raise BadInput("empty body")
    try:
        return np.array(rows)
    except ValueError:  # ragged nesting
        raise BadInput("JSON lines are not all the same shape") from None


def decode_csv(body: bytes) -> np.ndarray:
    """One example per line, comma-separated numbers, no header."""
    try:
        text = body.decode("utf-8")
        if not text.strip():
            raise BadInput("empty body")
        return np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64, ndmin=2)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadInput(f"CSV must be rows of comma-separated numbers ({_first_line(e)})") from None


def decode_npy(body: bytes) -> np.ndarray:
    """An .npy file (``numpy.save``); never unpickles and never trusts the header's size."""
    offset = _npy_data_offset(body)
    shape, fortran, dtype = _npy_header(bytes(body[:offset]))
    count = math.prod(shape)
    if count * dtype.itemsize != len(body) - offset:
        raise BadInput(
            f"array data is {len(body) - offset} bytes, its header promises {count * dtype.itemsize}"
        )
    data = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    return data.reshape(shape, order="F" if fortran else "C")


def _npy_data_offset(body: bytes) -> int:
    """Where the array data starts: magic, version, header length, header (numpy's format)."""
    if len(body) < NPY_PREFIX_BYTES or not body.startswith(NPY_MAGIC):
        raise BadInput("body is not an .npy array (no .npy magic string)")
    major = body[len(NPY_MAGIC)]
    if major == 1:
        offset = NPY_PREFIX_BYTES + int.from_bytes(body[8:10], "little")
    elif major == 2:
        offset = NPY_PREFIX_BYTES + 2 + int.from_bytes(body[8:12], "little")
    else:
        raise BadInput(f"unsupported .npy format version {major}")
    if offset > NPY_MAX_HEADER_BYTES or offset > len(body):
        raise BadInput(".npy header is too long or truncated")
    return offset


@lru_cache(maxsize=64)
def _npy_header(prefix: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Parse and check a header once: clients repeat the same few shapes (parsing costs ~30 us)."""
    stream = io.BytesIO(prefix)
    try:
        version = np.lib.format.read_magic(stream)
        read = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read(stream, NPY_MAX_HEADER_BYTES)
    except Exception as e:  # numpy's parser of untrusted text: ValueError, SyntaxError, TokenError...
        raise BadInput(f"body is not an .npy array ({_first_line(e)[:200]})") from None
    if dtype.hasobject or dtype.kind not in NUMERIC_KINDS:
        raise BadInput(f"array dtype {dtype} refused: send numbers (pickled/object arrays are never loaded)")
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise BadInput(f"array shape {shape} is not valid")
    return shape, fortran, dtype


DECODERS: dict[str, Callable[[bytes], np.ndarray]] = {
    content_types.JSON: decode_json,
    content_types.CSV: decode_csv,
    content_types.NPY: decode_npy,
    content_types.JSONLINES: decode_jsonlines,
}


def media_type(header: str | None) -> str:
    """'Application/JSON; charset=utf-8' -> 'application/json'."""
    return (header or "").split(";", 1)[0].strip().lower()


def decode(body: bytes, content_type: str | None) -> np.ndarray:
    """The default input_fn: decode by content type, then check it is a usable batch."""
    decoder = DECODERS.get(media_type(content_type))
    if decoder is None:
        supported = ", ".join(DECODERS)
        raise UnsupportedMediaType(
            f"Content-Type {content_type or '(none)'!r} not supported; use {supported}"
        )
    if not body:
        raise BadInput("empty body")
    return as_batch(decoder(body))


def as_batch(array: np.ndarray) -> np.ndarray:
    """(examples, ...) of finite numbers -> C-contiguous float32 (examples, features)."""
    if array.dtype.kind not in NUMERIC_KINDS:
        raise BadInput(f"values must be numbers, got {_kind_name(array.dtype)}")
    if array.size == 0:
        raise BadInput(f"no values in a batch of shape {array.shape}")
    if array.ndim < 2:
        raise BadInput(f"expected a batch of rows (examples x features), got shape {array.shape}")
    batch = array.reshape(array.shape[0], -1)
    if batch.dtype != np.float32:
        with np.errstate(over="ignore"):  # an overflow to float32 becomes inf, refused below
            batch = batch.astype(np.float32)
    batch = np.ascontiguousarray(batch)
    if not np.isfinite(batch).all():
        raise BadInput("values must be finite (no NaN or infinity, nothing beyond float32)")
    return batch


def _kind_name(dtype: np.dtype) -> str:
    return {"b": "booleans", "U": "strings", "S": "bytes", "O": "mixed or non-numeric values"}.get(
        dtype.kind, str(dtype)
    )


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0][:120] if str(error) else type(error).__name__
