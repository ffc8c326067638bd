"""This job's progress in /opt/ml/checkpoints, so a restarted managed-spot job resumes.

SageMaker syncs the folder to ``checkpoint_s3_uri`` and restores it when a spot job restarts;
it exists only when checkpointing is configured. We keep there: ``progress.json`` (the trials
this job finished) and a mirror of the best model (``model/``).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from core import artifact, modelcheck
from core.artifact import write_atomically
from entrypoint.constants import CHECKPOINT_MODEL_DIR, CHECKPOINT_PROGRESS_FILE

logger = logging.getLogger(__name__)
SET_ASIDE_SUFFIX = ".set-aside"  # checkpoints/model.set-aside: a model that failed the checks


class Progress:
    """Trial numbers this job has finished in its study, persisted after every trial."""

    def __init__(self, folder: Path | None, study_name: str, job_name: str) -> None:
        self.folder = folder
        self.study_name = study_name
        self.job_name = job_name
        self.finished: list[int] = []
        if folder is not None:
            self._load()

    @property
    def model_dir(self) -> Path | None:
        return None if self.folder is None else self.folder / CHECKPOINT_MODEL_DIR

    def _load(self) -> None:
        path = self.folder / CHECKPOINT_PROGRESS_FILE
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (ValueError, OSError, RecursionError) as exc:
            logger.warning("Ignoring unreadable checkpoint %s: %s", path, type(exc).__name__)
            return
        finished = doc.get("finished_trials", []) if isinstance(doc, dict) else None
        if not isinstance(finished, list) or not all(type(n) is int for n in finished):
            logger.warning(
                "Ignoring malformed checkpoint %s: expected an object with a list of trial numbers", path
            )
            return
        if (doc.get("study_name"), doc.get("job_name")) != (self.study_name, self.job_name):
            logger.warning(
                "Ignoring checkpoint %s: written by job %s for study %s",
                path,
                doc.get("job_name"),
                doc.get("study_name"),
            )
            return
        self.finished = list(finished)
        logger.info(
            "Checkpoint: this job already finished %d trials of '%s'", len(self.finished), self.study_name
        )

    def record(self, trial_number: int) -> None:
        self.finished.append(trial_number)
        if self.folder is None:
            return
        body = json.dumps(
            {"study_name": self.study_name, "job_name": self.job_name, "finished_trials": self.finished}
        ).encode()
        write_atomically(self.folder / CHECKPOINT_PROGRESS_FILE, lambda f: f.write(body))

    def set_aside_bad_model(self) -> Path | None:
        """Move a checkpointed model that fails serving's checks (core/modelcheck.py) out of the
        way, with a warning, so that the job runs and keeps a fresh best model there: a poisoned
        checkpoint must not fail every restart of a spot job. Links count as failing: the model
        is copied into model_dir, and nothing outside the checkpoint folder may travel with it.
        Returns where it went, or None."""
        source = self.model_dir
        if (
            source is None
            or not (source / artifact.META_FILE).exists()
            and not (source / artifact.META_FILE).is_symlink()
        ):
            return None
        try:
            links = [p.name for p in source.iterdir() if p.is_symlink()]
            if links:
                raise artifact.ArtifactError(source / links[0], "a symbolic link, not a file")
            modelcheck.check(source)
            return None
        except (artifact.ArtifactError, OSError) as exc:
            problem = exc
        target = source.with_name(source.name + SET_ASIDE_SUFFIX)
        shutil.rmtree(target, ignore_errors=True)
        source.rename(target)
        logger.warning(
            "Checkpointed model set aside in %s, not restored (%s); this job keeps a new best model",
            target,
            problem,
        )
        return target

    def restore_model(self, model_dir: Path) -> bool:
        """Copy the checkpointed best model into an empty model_dir (a restarted spot job)."""
        source = self.model_dir
        if source is None or (model_dir / artifact.META_FILE).exists():
            return False
        try:
            # The checks serving applies: among them, weights_file is a name in the folder,
            # never a path that leaves it.
            record = artifact.read(source) if source.is_dir() else None
        except artifact.ArtifactError as exc:
            logger.warning("Checkpointed model unreadable (%s): not restored", exc)
            return False
        if record is None or (record.job_name, record.study_name) != (self.job_name, self.study_name):
            return False
        if not (source / record.weights_file).is_file():
            logger.warning("Checkpointed model names %s, which is missing: not restored", record.weights_file)
            return False
        model_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / record.weights_file, model_dir / record.weights_file)
        # model.json last: the commit point.
        shutil.copy2(source / artifact.META_FILE, model_dir / artifact.META_FILE)
        logger.info("Restored the best model (trial %s) from the checkpoint", record.trial_number)
        return True
