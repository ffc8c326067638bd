"""A moto server whose training jobs report what SageMaker would: their status and final metrics
from the log their container printed.

moto marks every training job Completed at once, replaces its MetricDefinitions with one of its
own and reports a fixed FinalMetricDataList. Here a job keeps the definitions it was created
with, and when ``$MOTO_TRAINING_LOGS/<job>.log`` exists (the stdout of the test's real run of
that job), DescribeTrainingJob answers as SageMaker does for it: each definition's regex applied
to every line, the last match being the metric's final value (a 32-bit float, as SageMaker
stores it), and the status from
``<job>.status`` (default Completed; no final metrics while InProgress). No library emulates
SageMaker's metric parsing, hence this small patch; run as
``python -m tests.support.moto_training -H HOST -p PORT`` (it includes tests/support/moto_resource_auth.py).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy
from moto.core.utils import utcnow
from moto.sagemaker.models import FakeTrainingJob
from moto.server import main

import tests.support.moto_resource_auth  # noqa: F401  (its patches too)

ENDED = ("Completed", "Stopped", "Failed")
SECONDARY = {"InProgress": "Training", "Completed": "Completed", "Stopped": "Stopped", "Failed": "Failed"}


def final_metrics(log: str, definitions: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Each metric's last value in the log, as FinalMetricDataList lists them."""
    now = utcnow()
    found = []
    for definition in definitions:
        values = [m.group(1) for line in log.splitlines() if (m := re.search(definition["Regex"], line))]
        if values:
            # A 32-bit float, as SageMaker keeps it (botocore's shape MetricData.Value is Float).
            value = float(numpy.float32(values[-1]))
            found.append({"MetricName": definition["Name"], "Value": value, "Timestamp": now})
    return found


_init = FakeTrainingJob.__init__
_response = FakeTrainingJob.response_object.fget


def __init__(self: FakeTrainingJob, *args: Any, **kwargs: Any) -> None:
    spec = kwargs.get("algorithm_specification") or args[4]
    definitions = list(spec.get("MetricDefinitions") or [])
    _init(self, *args, **kwargs)
    self.algorithm_specification["MetricDefinitions"] = definitions


def response_object(self: FakeTrainingJob) -> dict[str, Any]:
    response = _response(self)
    folder = os.environ.get("MOTO_TRAINING_LOGS")
    log = Path(folder or "/nonexistent") / f"{self.training_job_name}.log"
    if not folder or not log.is_file():
        response.pop("FinalMetricDataList", None)  # not moto's made-up one
        return response
    status_file = log.with_suffix(".status")
    status = status_file.read_text().strip() if status_file.is_file() else "Completed"
    response["TrainingJobStatus"], response["SecondaryStatus"] = status, SECONDARY[status]
    definitions = self.algorithm_specification.get("MetricDefinitions") or []
    if status in ENDED:
        response["FinalMetricDataList"] = final_metrics(log.read_text(), definitions)
    else:
        response.pop("FinalMetricDataList", None)
        response.pop("TrainingEndTime", None)
    return response


FakeTrainingJob.__init__ = __init__  # type: ignore[method-assign]
FakeTrainingJob.response_object = property(response_object)  # type: ignore[assignment]

if __name__ == "__main__":
    main(sys.argv[1:])
