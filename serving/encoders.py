"""Class probabilities -> response body: one small encoder per Accept type.

Shapes (n examples, k classes; the label is the most probable class, ties to the lowest):
    application/json   {"predictions": [{"label": 3, "probabilities": [p0, ..., pk-1]}, ...]}
    text/csv           one line per example: label,p0,...,pk-1
    application/jsonlines  one line per example: {"label": 3, "probabilities": [p0, ..., pk-1]}
    application/x-npy  float32 array (n, k) of probabilities; labels = argmax(axis=1)

Text answers put a newline between lines and none after the last: batch transform with
AssembleWith=Line adds one after every answer, so its output file has one line per record and
no blank lines.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from falcon.util import mediatypes

from serving import content_types
from serving.errors import NotAcceptable

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


# Order matters: on a tie (e.g. "*/*") the first one wins.
ENCODERS: dict[str, Callable[[np.ndarray], bytes]] = {
    content_types.JSON: encode_json,
    content_types.NPY: encode_npy,
    content_types.CSV: encode_csv,
    content_types.JSONLINES: encode_jsonlines,
}


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
