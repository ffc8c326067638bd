"""Keep a secret out of log records and exception text while a block runs.

Defence in depth: nothing we write formats the password, but a driver or library might
echo connection arguments in an error. Hand-written: no library knows our secret.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Iterator

MASK = "********"
_active: list[str] = []  # the secrets of the redacting() blocks now open, and those kept out


def scrub(text: str) -> str:
    """``text`` with every secret of an open ``redacting()`` block masked (for stored text)."""
    for secret in _active:
        text = text.replace(secret, MASK)
    return text


def _all_handlers() -> list[logging.Handler]:
    """The root logger's handlers and those of loggers that do not propagate (Optuna's own)."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    unique: dict[int, logging.Handler] = {}
    for lg in loggers:
        for handler in lg.handlers:
            unique.setdefault(id(handler), handler)
    return list(unique.values())


class _Filter(logging.Filter):
    def __init__(self, secret: str) -> None:
        super().__init__()
        self._secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        if self._secret in text:
            record.msg, record.args, record.exc_info, record.exc_text = (
                text.replace(self._secret, MASK),
                None,
                None,
                None,
            )
        return True


def keep_out(secret: str) -> None:
    """Mask ``secret`` in every log record and stored text from now on, for the rest of the
    process (a password met while the job runs: a rotated secret's new one)."""
    if not secret or secret in _active:
        return
    log_filter = _Filter(secret)
    for handler in _all_handlers():
        handler.addFilter(log_filter)
    _active.append(secret)


@contextlib.contextmanager
def redacting(secret: str | None) -> Iterator[None]:
    """Mask ``secret`` in every log record; replace an exception that mentions it by a clean one."""
    if not secret:
        yield
        return
    log_filter = _Filter(secret)
    handlers = _all_handlers()
    for handler in handlers:
        handler.addFilter(log_filter)
    _active.append(secret)
    try:
        yield
    except Exception as exc:
        text = "".join(traceback.format_exception(exc))
        if secret not in text:
            raise
        # Re-raise the same type when it can carry a plain message, else a RuntimeError.
        message = str(exc).replace(secret, MASK)
        try:
            clean = type(exc)(message)
        except Exception:
            clean = RuntimeError(f"{type(exc).__name__}: {message}")
        raise clean from None
    finally:
        _active.remove(secret)
        for handler in handlers:
            handler.removeFilter(log_filter)
