"""Hyperparameters -> typed, validated settings. The only place that parses them (the job reads
hyperparameters.json with entrypoint/job/hyperparameters.py; the launcher checks a launch's).

SageMaker passes hyperparameters as a flat JSON object of strings. In script mode (an Estimator
with ``source_dir``/``entry_point``) SDK v2 JSON-encodes every value first, so ``n-trials=20``
arrives as ``"\"20\""``. We decode such values as the sagemaker-training toolkit does, but keep
the value a string for our own typed parsers (a study name "123" stays "123"), and validate
every key before anything touches the study.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from core.engines import ENGINES
from core.errors import UserError
from hpo_study.constants import IGNORED_HYPERPARAMETER_PREFIXES, METRIC_KEYS
from hpo_study.pruners import PRUNERS
from hpo_study.samplers import SAMPLERS

DIRECTIONS = ("maximize", "minimize")
NATURAL_DIRECTION = {"accuracy": "maximize", "loss": "minimize"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one training job was asked to do."""

    study_name: str = "chainer-mlp"
    n_trials: int = 10
    timeout: float | None = None
    objective_metric: str = "accuracy"
    direction: str = "maximize"
    sampler: str = "tpe"
    seed: int | None = None
    pruner: str = "median"
    epochs: int = 10
    batch_size: int = 128
    # Shared storage (see database/locate.py). With none of these the study is embedded (SQLite).
    host: str | None = None
    db_port: int | None = None
    db_name: str | None = None
    db_secret: str | None = None
    db_engine: str | None = None  # from the secret's "engine", else mysql
    db_ssl_ca: str | None = None
    db_ssl_verify: bool = True  # an RDS endpoint is verified against the image's RDS CA bundle (tls.py)
    region_name: str | None = None
    storage: str | None = None
    # Many jobs on one study (see entrypoint/study/join.py and docs/many-jobs.md).
    max_trials: int | None = None
    heartbeat_interval: int = 60
    heartbeat_grace_period: int = 180
    db_retry_timeout: float = 300.0
    # Fault tolerance (see runner.py and docs/faults.md).
    trial_timeout: float | None = None
    max_consecutive_failures: int = 5
    # Bring your own model (see usermodule.py).
    model_module: str | None = None
    install_requirements: bool = False
    baseline_trial: bool = True  # a new study's first trial: entrypoint/trials/builtin.py BASELINE_PARAMS

    @property
    def metric_key(self) -> str:
        return METRIC_KEYS[self.objective_metric]

    @property
    def uses_shared_storage(self) -> bool:
        return bool(self.host or self.db_secret or self.storage)


# --- value parsers: each takes the raw string and returns the typed value or raises ValueError


def _text(max_len: int = 256) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        if not value:
            raise ValueError("must not be empty")
        if len(value) > max_len:
            raise ValueError(f"must be at most {max_len} characters")
        return value

    return parse


def _int(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"must be an integer from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return value

    return parse


def _positive_seconds(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("must be a number of seconds greater than 0") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a number of seconds greater than 0")
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def _module_name(raw: str) -> str:
    value = raw.strip()
    if not value or not all(part.isidentifier() for part in value.split(".")):
        raise ValueError("must be a Python module name such as my_model or pkg.model")
    return value


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("true", "false"):
        raise ValueError("must be true or false")
    return value == "true"


_PARSERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "study_name": (_text(), "name of the Optuna study every job of the run joins"),
    "n_trials": (_int(1, 100_000), "trials this job runs"),
    "timeout": (_positive_seconds, "seconds after which this job starts no new trial"),
    "objective_metric": (_choice(*METRIC_KEYS), "validation metric the study optimises"),
    "direction": (_choice(*DIRECTIONS), "optimisation direction (follows objective-metric)"),
    "sampler": (_choice(*SAMPLERS), "Optuna sampler"),
    "seed": (_int(0, 2**31 - 1), "base seed; each job derives its own from it"),
    "pruner": (_choice(*PRUNERS), "Optuna pruner"),
    "epochs": (_int(1, 10_000), "epochs per trial"),
    "batch_size": (_int(1, 1_000_000), "mini-batch size"),
    "host": (_text(), "database host name"),
    "db_port": (_int(1, 65_535), "database port"),
    "db_name": (_text(64), "database (schema) name"),
    "db_secret": (_text(2048), "Secrets Manager secret id or ARN with the credentials"),
    "db_engine": (_choice(*ENGINES), "database engine"),
    "db_ssl_ca": (_text(1024), "path to a CA bundle; turns on verified TLS"),
    "db_ssl_verify": (_bool, "false: do not verify an RDS endpoint against the image's RDS CA bundle"),
    "region_name": (_text(64), "AWS region of the secret"),
    "storage": (_text(1024), "full storage URL (without a password)"),
    "max_trials": (_int(1, 1_000_000), "study-wide cap: every job stops once the study has this many"),
    "heartbeat_interval": (_int(1, 3600), "seconds between a running trial's heartbeats"),
    "heartbeat_grace_period": (_int(2, 86_400), "seconds without heartbeat before a trial is failed"),
    "db_retry_timeout": (_positive_seconds, "seconds to keep retrying a database that is away"),
    "trial_timeout": (_positive_seconds, "seconds after which a trial is ended and recorded as failed"),
    "max_consecutive_failures": (_int(1, 1000), "failed trials in a row after which the job stops"),
    "model_module": (_module_name, "module in source_dir with suggest_params() and build_network()"),
    "install_requirements": (_bool, "pip install source_dir/requirements.txt at start (needs network)"),
    "baseline_trial": (_bool, "true: the first trial of a new study is a known-good configuration"),
}
assert set(_PARSERS) == {f.name for f in dataclasses.fields(Settings)}


def accepted_keys() -> list[str]:
    """The hyperparameter names a user may pass, in the spelling of the AWS sample."""
    return [name.replace("_", "-") for name in _PARSERS]


def describe() -> str:
    """One line per hyperparameter, for the docs and error messages."""
    return "\n".join(f"{name.replace('_', '-')}: {doc}" for name, (_, doc) in _PARSERS.items())


def decode(raw: object) -> str:
    """The value as the user wrote it.

    SDK v2 JSON-encodes every value in script mode (``"\"conv_digits\""``, ``"\"20\""``). Like
    the toolkit, a value that parses as a JSON string is decoded; anything else (a plain string,
    or the text of a JSON number or boolean) stays the string it was, for the typed parsers.
    """
    if not isinstance(raw, str):
        return json.dumps(raw)  # a hand-made dict with numbers or booleans: their JSON text
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, str) else raw


MAX_KEY_SHOWN = 40  # characters of an unknown key echoed in the failure (FailureReason: 1024)
MAX_UNKNOWN_SHOWN = 5


def _shown(key: str) -> str:
    """A key as it is quoted in a message: printable, and cut short when long."""
    text = key if key.isprintable() else ascii(key)[1:-1]
    return text if len(text) <= MAX_KEY_SHOWN else f"{text[:MAX_KEY_SHOWN]}... ({len(key)} characters)"


def parse(hyperparameters: Mapping[str, object]) -> Settings:
    """Validate raw hyperparameters; raise UserError naming every bad key."""
    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    problems: list[str] = []
    unknown: list[str] = []
    for key, raw in hyperparameters.items():
        if key.startswith(IGNORED_HYPERPARAMETER_PREFIXES):
            continue
        name = key.strip().lower().replace("-", "_")
        if name not in _PARSERS:
            unknown.append(key)
            continue
        if name in spelled:
            problems.append(f"hyperparameter '{key}' is given twice (also as '{spelled[name]}')")
            continue
        spelled[name] = key
        parser, _ = _PARSERS[name]
        try:
            values[name] = parser(decode(raw))
        except ValueError as exc:
            # The value itself is not echoed: a misplaced secret must not reach the failure file.
            problems.append(f"hyperparameter '{key}' {exc}")

    metric = values.get("objective_metric", Settings.objective_metric)
    natural = NATURAL_DIRECTION[metric]
    if values.setdefault("direction", natural) != natural:
        problems.append(
            f"hyperparameter 'direction' is {values['direction']} but objective-metric {metric} "
            f"must be {natural}d"
        )
    if "storage" in values and "host" in values:
        problems.append("give either 'storage' or 'host', not both")
    interval = values.get("heartbeat_interval", Settings.heartbeat_interval)
    if values.get("heartbeat_grace_period", Settings.heartbeat_grace_period) <= interval:
        problems.append("'heartbeat-grace-period' must be longer than 'heartbeat-interval'")
    orphans = [k for k in ("db_name", "db_port", "db_engine", "db_ssl_ca") if k in values]
    if orphans and "db_secret" not in values and "storage" not in values:
        names = ", ".join(f"'{k.replace('_', '-')}'" for k in orphans)
        problems.append(f"{names} need 'db-secret' or 'storage' (without them the study is embedded)")
    if "db_secret" not in values and values.get("host"):
        problems.append("hyperparameter 'host' needs 'db-secret' (credentials are never hyperparameters)")
    if unknown:
        shown = ", ".join(f"'{_shown(k)}'" for k in unknown[:MAX_UNKNOWN_SHOWN])
        more = f" and {len(unknown) - MAX_UNKNOWN_SHOWN} more" if len(unknown) > MAX_UNKNOWN_SHOWN else ""
        plural = "s" if len(unknown) > 1 else ""
        problems.insert(0, f"unknown hyperparameter{plural} {shown}{more}")
        problems.append(f"accepted: {', '.join(accepted_keys())}")
    if problems:
        raise UserError("Invalid hyperparameters: " + "; ".join(problems))
    return Settings(**values)
