"""The study -> its plots and summary files in a local folder (``sagemaker-optuna report``).

A job ends within a second of its last trial and draws no plots (matplotlib, plotly and the
importance forest take 7 s, which a stopped job cannot spare). The plots are drawn here, from
the study itself, on the user's machine: the shared database, or the embedded study that a
job ships in its output.tar.gz (``--storage sqlite:///optuna-study.db``).
"""

from __future__ import annotations

from pathlib import Path

import optuna

from hpo_study import report as summary
from hpo_study.constants import BEST_TRIAL_FILE, TRIALS_CSV_FILE


def write(study: optuna.Study, out: str | Path) -> list[Path]:
    """trials.csv, best_trial.json and every plot the study has enough trials for, under ``out``."""
    from launcher import plots  # here: only `report` loads Optuna's plotting modules (1.6 s)

    folder = Path(out)
    best = summary.write(study, folder)
    written = [folder / TRIALS_CSV_FILE] + ([folder / BEST_TRIAL_FILE] if best is not None else [])
    return written + plots.write(study, folder)
