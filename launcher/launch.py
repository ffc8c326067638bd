"""``launch``: N training jobs on one study, each a CreateTrainingJob with the same settings.

The hyperparameters are validated with the jobs' own parser before anything is sent, so a
typo fails here once instead of in every job. SageMaker gives each job its own
``TRAINING_JOB_NAME``; each job derives its sampler seed from it, so jobs never repeat
each other's points.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

from core.errors import UserError
from hpo_study import settings as settings_mod
from hpo_study.settings import Settings
from launcher import aws, names
from launcher.constants import (
    DEFAULT_MAX_RUNTIME_S,
    DEFAULT_VOLUME_GB,
    HP_STUDY_NAME,
    MAX_HYPERPARAMETERS,
    METRIC_DEFINITIONS,
    REQUIRED_CHANNELS,
    SPOT_WAIT_FACTOR,
)

ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$")
INPUT_MODE = "File"
MAX_INSTANCES = 100  # hosts of one job: one study through the first host's proxy, or the database


@dataclasses.dataclass(frozen=True)
class LaunchSpec:
    """Everything the jobs of one launch share."""

    hyperparameters: dict[str, str]  # all of them, study-name and database keys included
    image: str
    role_arn: str
    output_path: str
    channels: dict[str, str]  # channel name -> s3:// prefix
    instance_type: str
    jobs: int = 1
    instance_count: int = 1
    volume_gb: int = DEFAULT_VOLUME_GB
    max_runtime_s: int = DEFAULT_MAX_RUNTIME_S
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    spot: bool = False
    max_wait_s: int | None = None  # spot only; default SPOT_WAIT_FACTOR x max_runtime_s
    checkpoint_s3: str | None = None  # spot only: each job checkpoints to <this>/<job name>
    job_prefix: str | None = None  # default: the study name
    tags: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def study_name(self) -> str:
        return self.hyperparameters[HP_STUDY_NAME]


def canonical(key: str) -> str:
    return key.strip().lower().replace("_", "-")


def merge_hyperparameters(*sources: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Union of (key, value) pairs; a key given twice (in any spelling) is a user error."""
    merged: dict[str, str] = {}
    seen: dict[str, str] = {}
    for source in sources:
        for key, value in source:
            if canonical(key) in seen:
                raise UserError(f"Hyperparameter '{key}' is given twice (also as '{seen[canonical(key)]}')")
            seen[canonical(key)] = key
            merged[key] = value
    return merged


def validate(spec: LaunchSpec) -> Settings:
    """Check what SageMaker and the jobs would refuse, before any job exists."""
    if not 1 <= spec.jobs <= 1000:
        raise UserError("--jobs must be from 1 to 1000")
    if not 1 <= spec.instance_count <= MAX_INSTANCES:
        raise UserError(f"--instances must be from 1 to {MAX_INSTANCES}")
    if len(spec.hyperparameters) > MAX_HYPERPARAMETERS:
        raise UserError(f"At most {MAX_HYPERPARAMETERS} hyperparameters (got {len(spec.hyperparameters)})")
    settings = settings_mod.parse(spec.hyperparameters)
    if spec.jobs > 1 and (not settings.uses_shared_storage or (settings.storage or "").startswith("sqlite")):
        raise UserError(
            f"{spec.jobs} jobs can only share a study in a database: pass --db-secret (or --storage "
            "with a MySQL/PostgreSQL URL); with the embedded default each job has a study of its own"
        )
    if not ROLE_ARN.match(spec.role_arn):
        raise UserError(
            f"--role must be an IAM role ARN (arn:aws:iam::<account>:role/<name>), not '{spec.role_arn}'"
        )
    aws.split_s3(spec.output_path, "--output")
    missing = [c for c in REQUIRED_CHANNELS if c not in spec.channels]
    if missing:
        raise UserError(f"Missing channel {', '.join(missing)}: pass --channel NAME=s3://bucket/prefix")
    for name, uri in spec.channels.items():
        aws.split_s3(uri, f"--channel {name}")
    if bool(spec.subnets) != bool(spec.security_groups):
        raise UserError("A VPC needs both --subnet and --security-group")
    if spec.spot:
        if not spec.checkpoint_s3:
            raise UserError("--spot needs --checkpoint-s3: a restarted spot job resumes from its checkpoint")
        aws.split_s3(spec.checkpoint_s3, "--checkpoint-s3")
        if spec.max_wait_s is not None and spec.max_wait_s < spec.max_runtime_s:
            raise UserError("--max-wait must be at least --max-runtime")
    elif spec.checkpoint_s3 or spec.max_wait_s is not None:
        raise UserError("--checkpoint-s3 and --max-wait only apply with --spot")
    return settings


def job_names(spec: LaunchSpec, now: dt.datetime | None = None) -> list[str]:
    return names.job_names(spec.job_prefix or spec.study_name, spec.jobs, now)


def request(spec: LaunchSpec, job_name: str) -> dict[str, Any]:
    """The CreateTrainingJob arguments of one job."""
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": spec.max_runtime_s}
    req: dict[str, Any] = {
        "TrainingJobName": job_name,
        "HyperParameters": {key: str(value) for key, value in spec.hyperparameters.items()},
        "AlgorithmSpecification": {
            "TrainingImage": spec.image,
            "TrainingInputMode": INPUT_MODE,
            "MetricDefinitions": [dict(m) for m in METRIC_DEFINITIONS],
        },
        "RoleArn": spec.role_arn,
        "InputDataConfig": [
            {
                "ChannelName": name,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
            for name, uri in spec.channels.items()
        ],
        "OutputDataConfig": {"S3OutputPath": spec.output_path},
        "ResourceConfig": {
            "InstanceType": spec.instance_type,
            "InstanceCount": spec.instance_count,
            "VolumeSizeInGB": spec.volume_gb,
        },
        "StoppingCondition": stopping,
    }
    if spec.subnets:
        req["VpcConfig"] = {"Subnets": list(spec.subnets), "SecurityGroupIds": list(spec.security_groups)}
    if spec.spot:
        req["EnableManagedSpotTraining"] = True
        stopping["MaxWaitTimeInSeconds"] = spec.max_wait_s or SPOT_WAIT_FACTOR * spec.max_runtime_s
        assert spec.checkpoint_s3 is not None  # validate() requires it with --spot
        req["CheckpointConfig"] = {"S3Uri": f"{spec.checkpoint_s3.rstrip('/')}/{job_name}"}
    if spec.tags:
        req["Tags"] = [{"Key": k, "Value": v} for k, v in spec.tags.items()]
    return req


def requests(spec: LaunchSpec, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Validate the spec and return every job's CreateTrainingJob arguments (nothing is sent)."""
    validate(spec)
    return [request(spec, name) for name in job_names(spec, now)]


def launch(session: aws.Session, spec: LaunchSpec, now: dt.datetime | None = None) -> list[str]:
    """Create the jobs one after the other; return their names.

    If one is refused, the ones already created keep running (they are valid members of the
    study) and the error names them.
    """
    reqs = requests(spec, now)
    sagemaker = aws.client(session, "sagemaker")
    created: list[str] = []
    for req in reqs:
        name = req["TrainingJobName"]
        try:
            aws.call(
                sagemaker,
                "create_training_job",
                errors={"ResourceInUse": f"A training job named '{name}' already exists"},
                **req,
            )
        except UserError as exc:
            if created:
                raise UserError(f"{exc} (already started, still running: {', '.join(created)})") from None
            raise
        created.append(name)
    return created
