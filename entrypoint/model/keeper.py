"""Keep exactly one complete model, this job's best trial, in model_dir.

The files and model.json's record are core/artifact.py's. A new best is written as
``trial-<n>.npz`` (temp file + fsync + rename), then ``model.json`` is replaced the same way,
then the old weights are removed. A crash at any step leaves the previous model.json pointing
at its own complete weights; stray files from an interrupted write are removed the next time a
keeper opens the folder. Hand-written because no library offers a multi-file atomic commit on
a plain folder. "Better" is core/ranking.py's rule: a tie keeps the first.
"""

from __future__ import annotations

from pathlib import Path

import chainer
import optuna
from optuna.trial import FrozenTrial, TrialState

from core import artifact, network, ranking
from core.artifact import ModelRecord, ModelSource


class BestModelKeeper:
    """An Optuna callback that saves a completed trial's network when it beats this job's best."""

    def __init__(
        self,
        model_dir: str | Path,
        direction: optuna.study.StudyDirection,
        models: dict[int, chainer.Link],
        source: ModelSource,
        mirror_dir: str | Path | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self._mirror = None if mirror_dir is None else BestModelKeeper(mirror_dir, direction, {}, source)
        self._direction = direction.name
        self._models = models
        self._source = source
        self.record: ModelRecord | None = artifact.read(self.model_dir)
        self.cleanup()

    @property
    def best_value(self) -> float | None:
        return None if self.record is None else self.record.value

    def is_better(self, value: float) -> bool:
        return ranking.is_better(self._direction, value, self.best_value)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        model = self._models.pop(trial.number, None)
        if model is None or trial.state != TrialState.COMPLETE or trial.value is None:
            return
        if self.is_better(trial.value):
            self.save(model, trial)

    def save(self, model: chainer.Link, trial: FrozenTrial) -> None:
        record = self._source.record(trial.number, trial.value, trial.params)
        artifact.write_atomically(
            self.model_dir / record.weights_file, lambda f: network.save_weights(f, model)
        )
        artifact.write(self.model_dir, record)  # the commit point
        self.record = record
        self.cleanup()
        if self._mirror is not None:  # the checkpoint copy, for a restarted spot job
            self._mirror.save(model, trial)

    def cleanup(self) -> None:
        """Remove weights and temp files that the committed model.json does not name."""
        keep = {artifact.META_FILE, self.record.weights_file} if self.record else set()
        for path in self.model_dir.iterdir():
            if artifact.is_written_by_us(path.name) and path.name not in keep and path.is_file():
                path.unlink(missing_ok=True)
