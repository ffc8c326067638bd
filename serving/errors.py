"""Exceptions with a meaning for the client (an HTTP status) or for start-up (exit 1)."""

from __future__ import annotations

from pathlib import Path


class ServingError(Exception):
    """A request the server refuses; the message goes to the client, so keep it short and safe.

    User hooks may raise these too (e.g. ``BadInput`` from a custom ``input_fn``).
    """

    status_code = 500


class BadInput(ServingError):
    status_code = 400


class NotAcceptable(ServingError):
    status_code = 406


class PayloadTooLarge(ServingError):
    status_code = 413


class UnsupportedMediaType(ServingError):
    status_code = 415


class StartupError(Exception):
    """The server cannot start (bad setting, missing or corrupt model, broken user code)."""


class ModelLoadError(StartupError):
    """The model folder cannot be served; names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem
