"""The model artifact: what a job leaves in model_dir (its model.tar.gz) and how it is read back.

    model.json      a ModelRecord; written last, so replacing it is the commit point of a model
    trial-<n>.npz   the weights of the trial model.json names (Chainer's npz layout, plain arrays)
    code/           the user's source folder, when the network comes from a model-module

Training's keeper writes it; serving, the launcher (from model.tar.gz) and the checkpoint
restore read it, all through this module. Format version 1 is every model written so far.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

META_FILE = "model.json"
WEIGHTS_PATTERN = "trial-{number}.npz"
CODE_DIR = "code"  # <model_dir>/code: the packed model-module, and serving's SAGEMAKER_PROGRAM
FORMAT_VERSION = 1
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"  # write_atomically's temp files, removed by the keeper

# What a reader cannot do without (serving refuses a model.json lacking any of them).
REQUIRED_KEYS = ("format_version", "weights_file", "params", "n_features", "n_classes")


class ArtifactError(ValueError):
    """A model.json that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """model.json: the network to rebuild (params, input width, classes, module) and where it came from."""

    weights_file: str
    params: dict[str, Any]
    n_features: int
    n_classes: int
    model_module: str | None = None  # None: the built-in MLP (core.network)
    trial_number: int | None = None
    value: float | None = None
    study_name: str | None = None
    job_name: str | None = None
    objective_metric: str | None = None
    direction: str | None = None
    format_version: int = FORMAT_VERSION
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # keys this version does not know

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: every field by name, plus the unknown keys it was read with."""
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        doc["params"] = dict(self.params)
        return {**self.extra, **doc}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True).encode("utf-8")

    @classmethod
    def from_dict(cls, doc: Any, where: str | Path = META_FILE) -> ModelRecord:
        """Validate a parsed model.json; ``where`` names it in the ArtifactError."""
        if not isinstance(doc, dict):
            raise ArtifactError(where, "not a JSON object")
        # First, as it is the check that keeps readers inside the model folder.
        if "weights_file" in doc and not is_file_name(doc["weights_file"]):
            problem = f"weights_file {doc['weights_file']!r} is not a file name in the model folder"
            raise ArtifactError(where, problem)
        missing = [key for key in REQUIRED_KEYS if key not in doc]
        if missing:
            raise ArtifactError(where, f"lacks {', '.join(missing)}")
        if type(doc["format_version"]) is not int or doc["format_version"] != FORMAT_VERSION:
            problem = f"format_version {json.dumps(doc['format_version'])[:40]}, this image reads {FORMAT_VERSION} (an integer)"
            raise ArtifactError(where, problem)
        if not isinstance(doc["params"], dict):
            raise ArtifactError(where, f"params is {type(doc['params']).__name__}, not an object")
        for key in ("n_features", "n_classes"):
            if type(doc[key]) is not int or doc[key] < 1:
                raise ArtifactError(where, f"{key} {doc[key]!r} is not a positive integer")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        fields = {key: doc[key] for key in known if key in doc}
        _check_optional(fields, where)
        return cls(**fields, extra={k: v for k, v in doc.items() if k not in known})

    @classmethod
    def from_json(cls, text: str | bytes, where: str | Path = META_FILE) -> ModelRecord:
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArtifactError(where, f"not valid JSON ({e})") from e
        except RecursionError:  # the parser gives up at the interpreter's depth, in microseconds
            raise ArtifactError(where, "not valid JSON (nested too deeply)") from None
        return cls.from_dict(doc, where)


# Optional fields -> the JSON types they may have (besides null), and how a message names them.
_OPTIONAL_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "model_module": ((str,), "a string"),
    "trial_number": ((int,), "an integer"),
    "value": ((int, float), "a number"),
    "study_name": ((str,), "a string"),
    "job_name": ((str,), "a string"),
    "objective_metric": ((str,), "a string"),
    "direction": ((str,), "a string"),
}


def _check_optional(fields: dict[str, Any], where: str | Path) -> None:
    for key, (types, described) in _OPTIONAL_TYPES.items():
        value = fields.get(key)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            raise ArtifactError(where, f"{key} {value!r} is not {described}")


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """What every model a job keeps has in common: its study and job, the data's shape, the
    objective, and the module whose build_network makes the network."""

    study_name: str
    job_name: str
    n_features: int
    n_classes: int
    objective_metric: str
    direction: str
    model_module: str | None = None

    def record(self, trial_number: int, value: float, params: Mapping[str, Any]) -> ModelRecord:
        """The record of this job's model of one trial."""
        return ModelRecord(
            weights_file=weights_file_name(trial_number),
            params=dict(params),
            trial_number=trial_number,
            value=value,
            **dataclasses.asdict(self),
        )


def weights_file_name(trial_number: int) -> str:
    return WEIGHTS_PATTERN.format(number=trial_number)


def is_file_name(name: object) -> bool:
    """True for a plain file name: a model.json may name a file in its folder, never a path."""
    return isinstance(name, str) and bool(name) and name not in (".", "..") and Path(name).name == name


def is_written_by_us(name: str) -> bool:
    """Weights and temp files that a writer of this format leaves (a keeper removes the unnamed)."""
    is_temp = name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)
    return is_temp or (name.startswith("trial-") and name.endswith(".npz"))


def read(model_dir: str | Path) -> ModelRecord | None:
    """The committed model's record, or None when model_dir holds no model.json."""
    path = Path(model_dir) / META_FILE
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ArtifactError(path, f"unreadable ({e.strerror})") from e
    return ModelRecord.from_json(text, path)


def write(model_dir: str | Path, record: ModelRecord) -> None:
    """Commit ``record`` as model_dir's model.json (its weights must be written already)."""
    body = record.to_json()
    write_atomically(Path(model_dir) / META_FILE, lambda f: f.write(body))


def write_atomically(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write a file through a temp file, fsync and rename, so a crash leaves the old or the new.

    Hand-written: the standard library has no atomic replace of a file's content.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX)
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
