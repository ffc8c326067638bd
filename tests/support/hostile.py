"""Hostile files for the tests: JSON bombs and model folders edited to fail the checks."""

from __future__ import annotations

import json
from pathlib import Path

from devtools.localmodel import write_model

DEEP = 200_000  # nesting depth of the JSON bombs: far past the interpreter's recursion limit


def deep_json(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


def edit_model_json(model_dir: Path, **changes) -> None:
    doc = json.loads((model_dir / "model.json").read_text())
    doc.update(changes)
    (model_dir / "model.json").write_text(json.dumps(doc))


def checkpointed_model(folder: Path, **changes) -> Path:
    model_dir = folder / "model"
    write_model(model_dir, 64, 10)
    edit_model_json(model_dir, job_name="spot", study_name="spot", **changes)
    return model_dir
