"""One epoch's report-and-prune step on MariaDB, against the number of finished trials in the study.

    .venv/bin/python benchmarks/report_prune.py [--sizes 50 500 2000 5000] [--trials 5]

Arms, interleaved at every study size, on one study in a fresh database of the machine's
MariaDB (connections as a job opens them, through the pure-Python driver):
  optuna  ``trial.report`` + ``trial.should_prune`` with Optuna's ``MedianPruner``: what the
          objective did before (and what a user's own Optuna loop does);
  ours    the objective's path now: our ``MedianPruner`` (finished trials read once each,
          values kept sorted per step; one query per epoch) and, once per trial, its values
          and metrics in one transaction (``trialdb.record``, timed apart).
Each arm keeps one pruner for the whole run, as a job does, and reads the study once before
timing (a job has read it by its first epoch: the sampler and the pruner's first call); that
first read is printed separately. The finished trials are inserted in bulk into Optuna's
tables (10 intermediate values each, as a 10-epoch job leaves them).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
import uuid

import mysql.connector
import numpy as np
import optuna
import sqlalchemy
from optuna.storages._rdb import models

from hpo_study import trialdb
from hpo_study.pruners import MedianPruner as OurMedianPruner

ROOT = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
EPOCHS = 10
RECORD_S: list[float] = []  # ours: the write at the end of each trial


def add_finished(study: optuna.Study, n: int, first_number: int, rng: np.random.Generator) -> None:
    """Insert ``n`` COMPLETE trials with ``EPOCHS`` intermediate values each, in bulk."""
    rdb = trialdb.rdb_of(study)
    now = datetime.datetime.now()
    t = models.TrialModel.__table__
    with rdb.engine.begin() as conn:
        conn.execute(
            t.insert(),
            [
                {
                    "number": first_number + i,
                    "study_id": study._study_id,
                    "state": optuna.trial.TrialState.COMPLETE,
                    "datetime_start": now,
                    "datetime_complete": now,
                }
                for i in range(n)
            ],
        )
        ids = [
            row[0]
            for row in conn.execute(
                sqlalchemy.select(t.c.trial_id)
                .where(t.c.study_id == study._study_id, t.c.number >= first_number)
                .order_by(t.c.number)
            )
        ]
        curves = np.cumsum(rng.normal(0.08, 0.05, size=(n, EPOCHS)), axis=1)
        kind = models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
        conn.execute(
            models.TrialIntermediateValueModel.__table__.insert(),
            [
                {
                    "trial_id": tid,
                    "step": s + 1,
                    "intermediate_value": float(curves[i, s]),
                    "intermediate_value_type": kind,
                }
                for i, tid in enumerate(ids)
                for s in range(EPOCHS)
            ],
        )
        conn.execute(
            models.TrialValueModel.__table__.insert(),
            [
                {
                    "trial_id": tid,
                    "objective": 0,
                    "value": float(curves[i, -1]),
                    "value_type": models.TrialValueModel.TrialValueType.FINITE,
                }
                for i, tid in enumerate(ids)
            ],
        )


def run_trial(study: optuna.Study, arm: str, rng: np.random.Generator) -> list[float]:
    """Seconds of each epoch's report-and-prune step of one trial (it is never pruned: a good curve)."""
    trial = study.ask()
    values: dict[int, float] = {}
    steps = []
    for epoch in range(1, EPOCHS + 1):
        value = 0.1 * epoch + float(rng.normal(0, 0.001)) + 1.0  # above every median: runs all epochs
        t0 = time.perf_counter()
        if arm == "optuna":
            trial.report(value, epoch)
            pruned = trial.should_prune()
        else:
            values[epoch] = value
            pruned = study.pruner.decide(study, values)
        steps.append(time.perf_counter() - t0)
        assert not pruned
    if arm == "ours":  # the values kept back, written with the metrics when the trial ends
        t0 = time.perf_counter()
        trialdb.record(trial, values, {"epochs_run": EPOCHS})
        RECORD_S.append(time.perf_counter() - t0)
    study.tell(trial, value)
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 500, 2000, 5000])
    parser.add_argument("--trials", type=int, default=5, help="timed trials per arm and size")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = f"bench_{uuid.uuid4().hex[:8]}"
    root = mysql.connector.connect(**ROOT)
    root.cursor().execute(f"CREATE DATABASE {db}")
    rng = np.random.default_rng(0)
    url = f"mysql+mysqlconnector://root@127.0.0.1:3306/{db}"
    try:
        pruners = {
            "optuna": optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
            "ours": OurMedianPruner(n_startup_trials=5, n_warmup_steps=1),
        }
        storage = optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": False})
        studies = {
            arm: optuna.create_study(storage=storage, study_name=arm, direction="maximize", pruner=p)
            for arm, p in pruners.items()
        }
        sizes = {arm: 0 for arm in studies}
        print(f"load average at start: {os.getloadavg()[0]:.2f}")
        print(
            "finished trials | optuna ms/epoch (median, p10-p90) | ours ms/epoch (median, p10-p90) | ours first read ms"
        )
        for size in args.sizes:
            for arm, study in studies.items():
                add_finished(study, size - sizes[arm], sizes[arm] + 10_000, rng)
                sizes[arm] = size
            first = time.perf_counter()
            pruners["ours"].decide(studies["ours"], {1: 0.0, 2: 0.0})  # reads what is new
            first_ms = (time.perf_counter() - first) * 1000
            studies["optuna"].get_trials(deepcopy=False)  # Optuna's cache, likewise
            timings: dict[str, list[float]] = {arm: [] for arm in studies}
            for _ in range(args.trials):  # interleaved: both arms see the same load
                for arm, study in studies.items():
                    timings[arm] += run_trial(study, arm, rng)
            cells = []
            for arm in studies:
                ms = sorted(v * 1000 for v in timings[arm])
                p10, p90 = ms[len(ms) // 10], ms[(len(ms) * 9) // 10]
                cells.append(f"{statistics.median(ms):.2f} ({p10:.2f}-{p90:.2f})")
            print(
                f"{size} | {cells[0]} | {cells[1]} | {first_ms:.0f}   (load {os.getloadavg()[0]:.2f})",
                flush=True,
            )
    finally:
        root.cursor().execute(f"DROP DATABASE IF EXISTS {db}")
        root.close()


if __name__ == "__main__":
    main()
