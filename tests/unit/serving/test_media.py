"""serving/media.py's table: every record decodes a batch and answers in its own type."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from serving import media
from serving.errors import UnsupportedMediaType

pytestmark = pytest.mark.unit

ROWS = [[0.0, 1.5, -2.0], [3.0, 4.25, 5.0]]


def _npy(rows: list[list[float]]) -> bytes:
    out = io.BytesIO()
    np.save(out, np.array(rows, dtype=np.float32), allow_pickle=False)
    return out.getvalue()


# A request body of ROWS in each media type: a new record needs its sample here.
SAMPLES = {
    media.JSON: json.dumps(ROWS).encode(),
    media.CSV: b"0,1.5,-2\n3,4.25,5\n",
    media.NPY: _npy(ROWS),
    media.JSONLINES: b"[0, 1.5, -2]\n[3, 4.25, 5]\n",
}


def test_every_record_has_a_sample_and_one_media_type():
    types = [m.media_type for m in media.MEDIA]
    assert len(set(types)) == len(types)
    assert sorted(types) == sorted(SAMPLES)
    assert list(media.DECODERS) == types and list(media.ENCODERS) == types


@pytest.mark.parametrize("record", media.MEDIA, ids=lambda m: m.media_type)
def test_each_record_decodes_its_sample_and_answers_in_its_type(record):
    batch = media.decode(SAMPLES[record.media_type], f"{record.media_type}; charset=utf-8")
    assert batch.dtype == np.float32 and batch.tolist() == ROWS
    probabilities = np.array([[0.25, 0.75], [0.9, 0.1]], dtype=np.float32)
    body, chosen = media.encode(probabilities, record.media_type)
    assert chosen == record.media_type and body == record.encode(probabilities)


def test_the_first_record_answers_a_wildcard_and_an_unknown_type_names_every_record():
    assert media.negotiate(media.ANY) == media.MEDIA[0].media_type
    with pytest.raises(UnsupportedMediaType) as info:
        media.decode(b"x", "application/x-unknown")
    assert all(m.media_type in str(info.value) for m in media.MEDIA)
