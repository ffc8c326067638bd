"""Checks on the errors a test provokes."""

from __future__ import annotations


def one_line(exc_info) -> str:
    """The text of the raised error (a pytest.raises result), checked to be one line."""
    text = str(exc_info.value)
    assert "\n" not in text and "Traceback" not in text
    return text
