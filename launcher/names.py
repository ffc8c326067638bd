"""Names for training jobs, models and endpoints that SageMaker accepts.

SageMaker names match ``[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}``; a study name may hold anything, so
it is reduced to that alphabet and cut to leave room for the timestamp and the index.
"""

from __future__ import annotations

import datetime as dt
import re

from launcher.constants import NAME_FALLBACK, NAME_MAX_LEN, TIMESTAMP_FORMAT

_NOT_ALLOWED = re.compile(r"[^a-zA-Z0-9]+")
VALID = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def timestamp(now: dt.datetime | None = None) -> str:
    """UTC time to the second, e.g. ``20240131-235959``."""
    return (now or dt.datetime.now(dt.UTC)).strftime(TIMESTAMP_FORMAT)


def prefix(text: str) -> str:
    """``text`` in SageMaker's alphabet: runs of other characters become one hyphen."""
    return _NOT_ALLOWED.sub("-", text).strip("-") or NAME_FALLBACK


def shorten(text: str, max_len: int = NAME_MAX_LEN) -> str:
    """``text`` in SageMaker's alphabet, at most ``max_len`` characters, ending in a letter or digit."""
    return prefix(prefix(text)[:max_len])


def join(base: str, *suffixes: str) -> str:
    """``base-suffix1-suffix2...`` cut to 63 characters by shortening ``base`` only."""
    tail = "".join(f"-{s}" for s in suffixes)
    room = NAME_MAX_LEN - len(tail)
    if room < 1:
        raise ValueError(f"suffixes {suffixes} leave no room for a name")
    return shorten(base, room) + tail


def job_names(base: str, count: int, now: dt.datetime | None = None) -> list[str]:
    """``<base>-<timestamp>-<i>`` for i in 0..count-1, all of the same length budget."""
    stamp = timestamp(now)
    width = len(str(count - 1))
    return [join(base, stamp, str(i).zfill(width)) for i in range(count)]
