"""The job's hyperparameters.json -> settings (parsed by hpo_study/settings.py, the only parser)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from core.errors import UserError
from hpo_study.settings import Settings, parse


def read(path: str | os.PathLike[str]) -> dict[str, object]:
    """hyperparameters.json as a dict (a missing file: none); one clear line for a bad file."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UserError(f"Cannot read the hyperparameters file {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"The hyperparameters file {path} is not UTF-8 text "
            f"(byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    if not text.strip():
        raise UserError(
            f"The hyperparameters file {path} is empty: it must hold a JSON object ({{}} for none)"
        )
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise UserError(f"The hyperparameters file {path} is not valid JSON: {exc}") from None
    except RecursionError:  # the parser stops at the interpreter's depth, in microseconds
        raise UserError(f"The hyperparameters file {path} is not valid JSON: nested too deeply") from None
    if not isinstance(raw, dict):
        raise UserError(
            f"The hyperparameters file {path} must hold a JSON object of strings, not {_json_type(raw)}"
        )
    return raw


def _json_type(value: object) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def load(path: str | os.PathLike[str]) -> Settings:
    """Read and validate hyperparameters.json (a missing file means all defaults)."""
    return parse(read(path))
