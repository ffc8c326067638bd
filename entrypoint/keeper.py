"""Keep exactly one complete model, this job's best trial, in model_dir.

Layout of model_dir:
    model.json        what serving needs (params, input width, classes, trial, value, study)
                      and the name of the weights file. Replacing it is the commit point.
    trial-<n>.npz     the weights of the trial named in model.json.

A new best is written as ``trial-<n>.npz`` (temp file + fsync + rename), then ``model.json`` is
replaced the same way, then the old weights are removed. A crash at any step leaves the
previous model.json pointing at its own complete weights; stray files from an interrupted
write are removed the next time a keeper opens the folder. Hand-written because no library
offers a multi-file atomic commit on a plain folder.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import chainer
import optuna
from optuna.trial import FrozenTrial, TrialState

from entrypoint.constants import MODEL_FORMAT_VERSION, MODEL_META_FILE, MODEL_WEIGHTS_PATTERN


def write_atomically(path: Path, write: Callable[[Any], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the model from a serving user
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
            exc.filename = str(path)  # a failed write or fsync names no file: name the folder's
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_meta(model_dir: str | Path) -> dict[str, Any] | None:
    """The committed model's metadata, or None when model_dir holds no model."""
    try:
        return json.loads((Path(model_dir) / MODEL_META_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


class BestModelKeeper:
    """An Optuna callback that saves a completed trial's network when it beats this job's best."""

    def __init__(
        self,
        model_dir: str | Path,
        direction: optuna.study.StudyDirection,
        models: dict[int, chainer.Link],
        describe: Callable[[FrozenTrial], dict[str, Any]],
        mirror_dir: str | Path | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self._mirror = None if mirror_dir is None else BestModelKeeper(mirror_dir, direction, {}, describe)
        self._direction = direction
        self._models = models
        self._describe = describe
        self.meta = read_meta(self.model_dir)
        self.cleanup()

    @property
    def best_value(self) -> float | None:
        return None if self.meta is None else float(self.meta["value"])

    def is_better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best_value is None:
            return True
        if self._direction == optuna.study.StudyDirection.MAXIMIZE:
            return value > self.best_value
        return value < self.best_value

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        model = self._models.pop(trial.number, None)
        if model is None or trial.state != TrialState.COMPLETE or trial.value is None:
            return
        if self.is_better(trial.value):
            self.save(model, trial)

    def save(self, model: chainer.Link, trial: FrozenTrial) -> None:
        weights = MODEL_WEIGHTS_PATTERN.format(number=trial.number)
        meta = {
            "format_version": MODEL_FORMAT_VERSION,
            "weights_file": weights,
            "trial_number": trial.number,
            "value": trial.value,
            "params": trial.params,
            **self._describe(trial),
        }
        write_atomically(self.model_dir / weights, lambda f: chainer.serializers.save_npz(f, model))
        body = json.dumps(meta, indent=2, sort_keys=True).encode("utf-8")
        write_atomically(self.model_dir / MODEL_META_FILE, lambda f: f.write(body))
        self.meta = meta
        self.cleanup()
        if self._mirror is not None:  # the checkpoint copy, for a restarted spot job
            self._mirror.save(model, trial)

    def cleanup(self) -> None:
        """Remove weights and temp files that the committed model.json does not name."""
        keep = {MODEL_META_FILE, self.meta["weights_file"]} if self.meta else set()
        for path in self.model_dir.iterdir():
            is_ours = path.name.startswith(".") and path.name.endswith(".tmp")
            is_ours = is_ours or (path.name.startswith("trial-") and path.suffix == ".npz")
            if is_ours and path.name not in keep and path.is_file():
                path.unlink(missing_ok=True)
