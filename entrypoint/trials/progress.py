"""After every trial this job finishes, one metric line: how many it finished and the model it keeps."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo_study.constants import ATTR_FAIL_REASON

INTERRUPTED_PREFIX = "interrupted"  # runner.py's fail_reason of a trial ended by SIGTERM (re-queued)


class ProgressLines:
    """An Optuna callback: after every trial this job finishes, one line with how many it has
    finished and the model it keeps (its best trial), e.g.
    ``job_trials=4 model_trial=7 model_value=0.9593``.

    SageMaker turns these lines into the job's metrics (the launcher's MetricDefinitions):
    CloudWatch time series while the job runs, and DescribeTrainingJob's FinalMetricDataList
    (each metric's last value) once it ends. ``sagemaker-optuna status``, ``best`` and ``deploy``
    read them when the laptop has no path to the database (launcher/jobresults.py). Values are
    printed in full precision, but SageMaker keeps a metric as a 32-bit float (MetricData.Value
    is a Float), so the launcher rounds every source to float32 before comparing jobs' models:
    values closer than float32 can tell apart are ties there (the lower trial wins).
    """

    def __init__(self, keeper: Any, finished: list[int]) -> None:
        self._keeper = keeper  # keeper.BestModelKeeper (its record is the kept model)
        self._done = set(finished)  # a restarted spot job counts what it finished before

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        reason = trial.user_attrs.get(ATTR_FAIL_REASON) or ""
        if trial.state == TrialState.FAIL and reason.startswith(INTERRUPTED_PREFIX):
            return  # re-queued: another run of it will count
        self._done.add(trial.number)
        print(self.line(), flush=True)

    def line(self) -> str:
        text = f"job_trials={len(self._done)}"
        record = self._keeper.record
        if record is not None:
            text += f" model_trial={record.trial_number} model_value={record.value!r}"
        return text
