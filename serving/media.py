"""The media types /invocations reads and writes: one record each, its decoder and its encoder.

To add a content type, add its functions and its record to :data:`MEDIA`, and a sample body to
tests/unit/serving/test_media.py, which checks every record both ways.

Decoding: request body -> a float32 batch (rows x features). Every decoder refuses rather than
guesses: pickles and object arrays are never loaded, and non-numeric, non-finite, empty or
ragged input is a BadInput (400) with a short message.

Encoding: class probabilities -> response body (n examples, k classes; the label is the most
probable class, ties to the lowest):
    application/json   {"predictions": [{"label": 3, "probabilities": [p0, ..., pk-1]}, ...]}
    text/csv           one line per example: label,p0,...,pk-1
    application/jsonlines  one line per example: {"label": 3, "probabilities": [p0, ..., pk-1]}
    application/x-npy  float32 array (n, k) of probabilities; labels = argmax(axis=1)

Text answers put a newline between lines and none after the last: batch transform with
AssembleWith=Line adds one after every answer, so its output file has one line per record and
no blank lines.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from falcon.util import mediatypes

from serving.errors import BadInput, NotAcceptable, UnsupportedMediaType

JSON = "application/json"
CSV = "text/csv"
JSONLINES = "application/jsonlines"  # one JSON value per line (the SDK's JSONLinesSerializer)
NPY = "application/x-npy"
ANY = "*/*"
TEXT = "text/plain"  # error messages

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


FLOAT_FORMAT = "%.9g"  # 9 significant digits: every float32 survives the round trip


def _rows(probabilities: np.ndarray, row_format: str) -> list[str]:
    """One formatted line per example: its label, then its probabilities (``%`` formatting in C)."""
    if not np.isfinite(probabilities).all():
        raise ValueError("non-finite probabilities cannot be encoded")
    labels = probabilities.argmax(axis=1).tolist()
    return [row_format % (label, *row) for label, row in zip(labels, probabilities.tolist(), strict=True)]


def encode_json(probabilities: np.ndarray) -> bytes:
    values = ",".join([FLOAT_FORMAT] * probabilities.shape[1])
    rows = _rows(probabilities, '{"label":%d,"probabilities":[' + values + "]}")
    return ('{"predictions":[' + ",".join(rows) + "]}").encode("ascii")


def encode_csv(probabilities: np.ndarray) -> bytes:
    rows = _rows(probabilities, "%d," + ",".join([FLOAT_FORMAT] * probabilities.shape[1]))
    return "\n".join(rows).encode("ascii")


def encode_jsonlines(probabilities: np.ndarray) -> bytes:
    values = ",".join([FLOAT_FORMAT] * probabilities.shape[1])
    rows = _rows(probabilities, '{"label":%d,"probabilities":[' + values + "]}")
    return "\n".join(rows).encode("ascii")


def encode_npy(probabilities: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, np.ascontiguousarray(probabilities, dtype=np.float32), allow_pickle=False)
    return out.getvalue()


@dataclasses.dataclass(frozen=True)
class Media:
    """One content type /invocations reads (``decode``) and answers in (``encode``)."""

    media_type: str
    decode: Callable[[bytes], np.ndarray]
    encode: Callable[[np.ndarray], bytes]


# Order matters: on a tie of the Accept header (e.g. "*/*") the first one answers.
MEDIA: tuple[Media, ...] = (
    Media(JSON, decode_json, encode_json),
    Media(NPY, decode_npy, encode_npy),
    Media(CSV, decode_csv, encode_csv),
    Media(JSONLINES, decode_jsonlines, encode_jsonlines),
)
DECODERS: dict[str, Callable[[bytes], np.ndarray]] = {m.media_type: m.decode for m in MEDIA}
ENCODERS: dict[str, Callable[[np.ndarray], bytes]] = {m.media_type: m.encode for m in MEDIA}


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


@lru_cache(maxsize=256)
def negotiate(accept: str) -> str | None:
    """The best of our types for an Accept header (q-values and wildcards honoured), or None.

    Cached: clients repeat a handful of headers, and parsing one costs more than encoding.
    """
    try:
        return mediatypes.best_match(ENCODERS, accept.lower()) or None
    except ValueError:  # malformed header
        return None


def encode(probabilities: np.ndarray, accept: str) -> tuple[bytes, str]:
    """The default output_fn: encode in the client's preferred type, or 406."""
    chosen = negotiate(accept)
    if chosen is None:
        raise NotAcceptable(f"Accept {accept!r} not supported; use {', '.join(ENCODERS)}")
    if not isinstance(probabilities, np.ndarray) or probabilities.ndim != 2:
        raise TypeError(f"output_fn expects an (examples, classes) array, got {type(probabilities).__name__}")
    return ENCODERS[chosen](probabilities), chosen


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
