"""Read a request body under the payload limit, without ever holding more than the limit."""

from __future__ import annotations

from typing import BinaryIO

from serving.constants import DRAIN_LIMIT_BYTES
from serving.errors import BadInput, PayloadTooLarge

CHUNK_BYTES = 64 * 1024


def read_body(stream: BinaryIO, content_length: int | None, limit: int) -> bytes:
    """The whole body, or PayloadTooLarge (413) once it is known to exceed ``limit``.

    A declared Content-Length over the limit is refused before reading; a chunked body is
    read up to one byte past the limit. Either way the rest is drained (up to
    DRAIN_LIMIT_BYTES) so that a client still sending its body can read the 413. A body that
    ends before its Content-Length (the client closed its side early) is a BadInput (400), not
    a shorter request.
    """
    if content_length is not None and content_length > limit:
        _drain(stream)
        raise PayloadTooLarge(f"body of {content_length} bytes is over the {limit} byte limit")
    body = stream.read(limit + 1 if content_length is None else content_length)
    if len(body) > limit:
        _drain(stream)
        raise PayloadTooLarge(f"body is over the {limit} byte limit")
    if content_length is not None and len(body) < content_length:
        raise BadInput(
            f"body ended after {len(body)} of the {content_length} bytes its Content-Length declares"
        )
    return body


def _drain(stream: BinaryIO) -> None:
    drained = 0
    while drained < DRAIN_LIMIT_BYTES and (chunk := stream.read(CHUNK_BYTES)):
        drained += len(chunk)
