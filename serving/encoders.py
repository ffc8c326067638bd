"""Class probabilities -> response body: one small encoder per Accept type.

Shapes (n examples, k classes; the label is the most probable class, ties to the lowest):
    application/json   {"predictions": [{"label": 3, "probabilities": [p0, ..., pk-1]}, ...]}
    text/csv           one line per example: label,p0,...,pk-1
    application/x-npy  float32 array (n, k) of probabilities; labels = argmax(axis=1)
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import numpy as np
from falcon.util import mediatypes

from serving import content_types
from serving.errors import NotAcceptable

CSV_FLOAT_FORMAT = "%.9g"  # enough digits to round-trip a float32


def encode_json(probabilities: np.ndarray) -> bytes:
    labels = probabilities.argmax(axis=1).tolist()
    rows = probabilities.tolist()
    doc = {
        "predictions": [
            {"label": label, "probabilities": row} for label, row in zip(labels, rows, strict=True)
        ]
    }
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def encode_csv(probabilities: np.ndarray) -> bytes:
    table = np.column_stack([probabilities.argmax(axis=1), probabilities]).astype(np.float64)
    out = io.StringIO()
    formats = ["%d"] + [CSV_FLOAT_FORMAT] * probabilities.shape[1]
    np.savetxt(out, table, fmt=formats, delimiter=",")
    return out.getvalue().encode("utf-8")


def encode_npy(probabilities: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, np.ascontiguousarray(probabilities, dtype=np.float32), allow_pickle=False)
    return out.getvalue()


# Order matters: on a tie (e.g. "*/*") the first one wins.
ENCODERS: dict[str, Callable[[np.ndarray], bytes]] = {
    content_types.JSON: encode_json,
    content_types.NPY: encode_npy,
    content_types.CSV: encode_csv,
}


def negotiate(accept: str) -> str | None:
    """The best of our types for an Accept header (q-values and wildcards honoured), or None."""
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
