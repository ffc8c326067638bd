"""Training jobs as SageMaker reports them: describe, wait for the end, summarise.

Moto (the tests' AWS) completes a job at once; on AWS a job takes minutes to hours, so
waiting polls at a fixed interval until every job ends or a deadline passes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

from core.errors import UserError
from launcher import aws
from launcher.constants import JOB_TERMINAL, JOB_WITH_MODEL, SAGEMAKER_NOT_FOUND


@dataclasses.dataclass(frozen=True)
class JobState:
    """What a user needs from DescribeTrainingJob."""

    name: str
    status: str
    secondary_status: str | None = None
    failure_reason: str | None = None
    model_data_url: str | None = None
    output_path: str | None = None
    image: str | None = None
    role_arn: str | None = None

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> JobState:
        return cls(
            name=d["TrainingJobName"],
            status=d["TrainingJobStatus"],
            secondary_status=d.get("SecondaryStatus"),
            failure_reason=d.get("FailureReason"),
            model_data_url=d.get("ModelArtifacts", {}).get("S3ModelArtifacts"),
            output_path=d.get("OutputDataConfig", {}).get("S3OutputPath"),
            image=d.get("AlgorithmSpecification", {}).get("TrainingImage"),
            role_arn=d.get("RoleArn"),
        )

    @property
    def ended(self) -> bool:
        return self.status in JOB_TERMINAL

    @property
    def has_model(self) -> bool:
        """Completed or Stopped (our jobs save their best model before they stop) with artifacts."""
        return self.status in JOB_WITH_MODEL and bool(self.model_data_url)

    def row(self) -> dict[str, Any]:
        return {
            "job": self.name,
            "status": self.status,
            "secondary_status": self.secondary_status,
            "failure_reason": self.failure_reason,
            "model": self.model_data_url if self.has_model else None,
        }


def describe(sagemaker: Any, name: str) -> JobState:
    """DescribeTrainingJob; an unknown name is a user error naming the job."""
    d = aws.call(
        sagemaker,
        "describe_training_job",
        errors={SAGEMAKER_NOT_FOUND: f"No training job '{name}' in this region"},
        TrainingJobName=name,
    )
    return JobState.from_description(d)


def find(sagemaker: Any, name: str) -> JobState | None:
    """Like :func:`describe`, but None for a job SageMaker does not know."""
    try:
        return describe(sagemaker, name)
    except aws.AwsError as exc:
        if exc.code == SAGEMAKER_NOT_FOUND:
            return None
        raise


def wait(
    sagemaker: Any,
    names: Sequence[str],
    timeout_s: float,
    poll_s: float,
    on_change: Callable[[JobState], None] = lambda state: None,
) -> list[JobState]:
    """Poll every job until all have ended or ``timeout_s`` passed; return their last states."""
    deadline = time.monotonic() + timeout_s
    states: dict[str, JobState] = {}
    while True:
        for name in names:
            if name in states and states[name].ended:
                continue
            state = describe(sagemaker, name)
            if states.get(name) != state:
                on_change(state)
            states[name] = state
        if all(s.ended for s in states.values()) or time.monotonic() >= deadline:
            return [states[n] for n in names]
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def all_completed(states: Sequence[JobState]) -> bool:
    """True when every job ended with a model (Completed, or Stopped after saving)."""
    return all(s.has_model for s in states)


def check_wrote_model(state: JobState) -> str:
    """The job's model.tar.gz URI, or a user error saying why there is none."""
    if not state.has_model:
        why = f"its status is {state.status}" + (f": {state.failure_reason}" if state.failure_reason else "")
        if not state.ended:
            why += "; a job uploads its model when it ends"
        raise UserError(f"Training job '{state.name}' wrote no model ({why})")
    assert state.model_data_url is not None
    return state.model_data_url
