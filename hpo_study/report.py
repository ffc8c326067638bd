"""The study -> files in the output data folder and a closing log line.

The CSV is written with the csv module rather than ``study.trials_dataframe()`` so that the
image does not carry pandas for one table.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from core import ranking
from entrypoint.constants import ATTR_FAIL_REASON, BEST_TRIAL_FILE, TRIALS_CSV_FILE

INTERRUPTED_PREFIX = "interrupted"  # runner.py's fail_reason of a trial ended by SIGTERM (re-queued)


def _row(trial: FrozenTrial) -> dict[str, Any]:
    row: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "datetime_start": trial.datetime_start and trial.datetime_start.isoformat(),
        "datetime_complete": trial.datetime_complete and trial.datetime_complete.isoformat(),
        "duration_s": trial.duration and round(trial.duration.total_seconds(), 3),
    }
    row.update({f"params_{k}": v for k, v in sorted(trial.params.items())})
    row.update({f"user_attrs_{k}": v for k, v in sorted(trial.user_attrs.items())})
    return row


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The study's best trial by the keeper's rule (core/ranking.py), so it is the model kept."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return ranking.best(study.direction.name, complete, lambda t: t.value)


def write(study: optuna.Study, output_data_dir: str | Path) -> FrozenTrial | None:
    """Write trials.csv and best_trial.json for the whole study; return its best trial."""
    out = Path(output_data_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [_row(t) for t in study.get_trials(deepcopy=False)]
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with open(out / TRIALS_CSV_FILE, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    best = best_trial(study)
    if best is not None:
        summary = {
            "study_name": study.study_name,
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "user_attrs": best.user_attrs,
        }
        (out / BEST_TRIAL_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    return best


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
