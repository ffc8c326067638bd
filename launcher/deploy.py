"""``deploy``: the best model behind a SageMaker endpoint, served by the same image's ``serve``.

CreateModel (our image + the best job's model.tar.gz), CreateEndpointConfig, CreateEndpoint,
then optionally wait until the endpoint is InService. Names carry the trial number and a
timestamp so that each deployment's model and config stay distinct.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any

from core.errors import UserError
from launcher import aws, names
from launcher.best import BestModel
from launcher.constants import ENDPOINT_FAILED, ENDPOINT_IN_SERVICE, ENDPOINT_VARIANT, SAGEMAKER_NOT_FOUND


@dataclasses.dataclass(frozen=True)
class DeploySpec:
    instance_type: str
    instance_count: int = 1
    endpoint_name: str | None = None  # default: the study name
    image: str | None = None  # default: the image that trained the model
    role_arn: str | None = None  # default: the role of the job that trained the model


@dataclasses.dataclass(frozen=True)
class Deployment:
    model_name: str
    endpoint_config_name: str
    endpoint_name: str
    endpoint_arn: str
    model_data_url: str
    image: str
    status: str | None = None
    failure_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _names(best: BestModel, spec: DeploySpec, now: dt.datetime | None) -> tuple[str, str]:
    endpoint = spec.endpoint_name or names.shorten(best.study_name)
    if not names.VALID.match(endpoint):
        raise UserError(f"--endpoint-name '{endpoint}' must match [a-zA-Z0-9](-*[a-zA-Z0-9]){{0,62}}")
    return endpoint, names.join(endpoint, f"t{best.trial_number}", names.timestamp(now))


def _endpoint_exists(sagemaker: Any, name: str) -> bool:
    try:
        aws.call(sagemaker, "describe_endpoint", EndpointName=name)
    except aws.AwsError as exc:
        if exc.code == SAGEMAKER_NOT_FOUND:
            return False
        raise
    return True


def deploy(sagemaker: Any, best: BestModel, spec: DeploySpec, now: dt.datetime | None = None) -> Deployment:
    """Create the model, the endpoint config and the endpoint; return their names."""
    image = spec.image or best.job.image
    role = spec.role_arn or best.job.role_arn
    if not image or not role:
        raise UserError("Pass --image and --role: the training job does not name them")
    endpoint, model = _names(best, spec, now)
    if _endpoint_exists(sagemaker, endpoint):
        raise UserError(f"Endpoint '{endpoint}' already exists: pass another --endpoint-name")
    created: list[str] = []

    def create(method: str, what: str, errors: dict[str, str] | None = None, **kwargs: Any) -> dict:
        try:
            answer = aws.call(sagemaker, method, errors=errors, **kwargs)
        except UserError as exc:
            done = f" (already created: {', '.join(created)})" if created else ""
            raise UserError(f"{exc}{done}") from None
        created.append(what)
        return answer

    create(
        "create_model",
        f"model {model}",
        ModelName=model,
        PrimaryContainer={"Image": image, "ModelDataUrl": best.model_data_url},
        ExecutionRoleArn=role,
    )
    create(
        "create_endpoint_config",
        f"endpoint config {model}",
        EndpointConfigName=model,
        ProductionVariants=[
            {
                "VariantName": ENDPOINT_VARIANT,
                "ModelName": model,
                "InitialInstanceCount": spec.instance_count,
                "InstanceType": spec.instance_type,
            }
        ],
    )
    answer = create(
        "create_endpoint",
        f"endpoint {endpoint}",
        EndpointName=endpoint,
        EndpointConfigName=model,
    )
    return Deployment(
        model_name=model,
        endpoint_config_name=model,
        endpoint_name=endpoint,
        endpoint_arn=answer["EndpointArn"],
        model_data_url=best.model_data_url,
        image=image,
    )


def wait_in_service(sagemaker: Any, deployment: Deployment, timeout_s: float, poll_s: float) -> Deployment:
    """Poll DescribeEndpoint until InService or Failed, or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        d = aws.call(sagemaker, "describe_endpoint", EndpointName=deployment.endpoint_name)
        status = d["EndpointStatus"]
        if status in (ENDPOINT_IN_SERVICE, ENDPOINT_FAILED) or time.monotonic() >= deadline:
            return dataclasses.replace(deployment, status=status, failure_reason=d.get("FailureReason"))
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
