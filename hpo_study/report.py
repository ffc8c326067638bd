"""The study -> trials.csv and best_trial.json (the job's output data folder, or ``sagemaker-optuna
report``'s); the best trial is hpo_study/standings.py's, the one ``status`` and ``best`` name.

The CSV is written with the csv module rather than ``study.trials_dataframe()`` so that the
image does not carry pandas for one table.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from hpo_study.constants import BEST_TRIAL_FILE, TRIALS_CSV_FILE
from hpo_study.standings import best_of


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


def write(study: optuna.Study, output_data_dir: str | Path) -> FrozenTrial | None:
    """Write trials.csv and best_trial.json for the whole study; return its best trial."""
    out = Path(output_data_dir)
    out.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)  # one read: the CSV and best_trial.json agree
    rows = [_row(t) for t in trials]
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with open(out / TRIALS_CSV_FILE, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    best = best_of(study, trials)
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
