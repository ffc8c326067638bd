"""A model folder checked before anything is built from it: by serving at start, and by training
for the copy of its best model in the checkpoint folder (a restarted spot job).

model.json goes through core/artifact.py's checks; the weights file's arrays are read from their
headers alone (nothing decompressed, nothing unpickled) and, for the built-in network, compared
with the shapes model.json's params call for, so a model.json describing a huge network, or
weights declaring huge arrays, is refused before it costs memory or time.
"""

from __future__ import annotations

from pathlib import Path

from core import artifact, network, npyfile
from core.artifact import ArtifactError, ModelRecord
from core.memory import memory_budget


def check(model_dir: str | Path, max_bytes: int | None = None) -> ModelRecord:
    """model_dir's record once its model.json and weights file passed the checks; else an
    ArtifactError naming the file and the problem. ``max_bytes``: the weights' limit in memory
    (default: core.memory.memory_budget())."""
    model_dir = Path(model_dir)
    record = artifact.read(model_dir)
    if record is None:
        raise ArtifactError(model_dir / artifact.META_FILE, "missing: the folder holds no model")
    weights = model_dir / record.weights_file
    expected = None
    if not record.model_module:  # the built-in network: its shapes follow from params alone
        try:
            expected = network.expected_shapes(record.params, record.n_features, record.n_classes)
        except ValueError as exc:
            raise ArtifactError(
                model_dir / artifact.META_FILE, f"params do not describe a network ({exc})"
            ) from None
    try:
        found = npyfile.weight_shapes(weights, memory_budget() if max_bytes is None else max_bytes)
    except FileNotFoundError:
        raise ArtifactError(weights, f"missing (named by {artifact.META_FILE})") from None
    except network.WEIGHTS_ERRORS as exc:
        raise ArtifactError(
            weights, f"corrupt or does not match {artifact.META_FILE} ({type(exc).__name__}: {exc})"
        ) from None
    if expected is not None:
        try:
            network.check_shapes(expected, found)
        except ValueError as exc:
            raise ArtifactError(weights, f"corrupt or does not match {artifact.META_FILE}: {exc}") from None
    return record
