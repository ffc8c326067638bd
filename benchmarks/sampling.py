"""A later trial's sampling on a large study, split from the storage's writes: ours
(hpo_study/optuna_private.py's LiarTPESampler on its LeanReadStorage, as a job runs them) against
Optuna's TPESampler with constant liar on Optuna's RDBStorage, on one MariaDB study of 5,000
finished trials of the built-in search space (benchmarks/large_study.py's ``fill``).

    .venv/bin/python benchmarks/sampling.py [--size 5000] [--asks 10] [--repeats 3]
                                            [--database NAME] [--keep]

Each repeat runs both arms, interleaved, each in a fresh process (one sampler per process, as in a
job): load the study, one ask to fill the caches (a job's first trial: large_study.py measures it),
then ``--asks`` asks of the built-in search space, each told COMPLETE. Per ask: ``sample_s`` the time
inside the sampler's ``_sample`` (reading the trials it needs, the split, the Parzen estimators, the
draws), ``ask_s`` ``study.ask()`` plus the search space's suggestions (``sample_s`` and Optuna's
writes: the new trial, one row per parameter), ``tell_s``. Prints one JSON line per process and the
medians (min-max) over every ask of every repeat, with the 1-minute load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # large_study, trial_overhead
import large_study  # noqa: E402
from trial_overhead import drop_database  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

ARM = r"""
import json, sys, time, warnings
import optuna
warnings.simplefilter("ignore")
optuna.logging.set_verbosity(optuna.logging.WARNING)
from entrypoint.trials.builtin import suggest_params as space  # the built-in search space
from hpo_study import optuna_private as op

arm, url, asks = sys.argv[1], sys.argv[2], int(sys.argv[3])
if arm == "ours":
    storage = op.LeanReadStorage(url, skip_table_creation=True)
    sampler = op.LiarTPESampler(seed=1, constant_liar=True)
else:
    storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
    sampler = optuna.samplers.TPESampler(seed=1, constant_liar=True)
inside = [0.0]
sample = type(sampler)._sample

def timed(self, *args):
    start = time.perf_counter()
    try:
        return sample(self, *args)
    finally:
        inside[0] += time.perf_counter() - start

type(sampler)._sample = timed
study = optuna.load_study(study_name="large", storage=storage, sampler=sampler)

def one():
    inside[0] = 0.0
    start = time.perf_counter()
    trial = study.ask()
    space(trial)
    asked = time.perf_counter()
    if arm == "ours":
        op.tell(study, trial, 0.5, optuna.trial.TrialState.COMPLETE)
    else:
        study.tell(trial, 0.5)
    return {"sample_s": inside[0], "ask_s": asked - start, "tell_s": time.perf_counter() - asked}

one()  # the first ask fills the caches (a job's first trial)
print(json.dumps({"arm": arm, "asks": [one() for _ in range(asks)]}))
"""


def run_arm(arm: str, database: str, asks: int) -> list[dict[str, float]]:
    out = subprocess.run(
        [sys.executable, "-c", ARM, arm, large_study.url(database), str(asks)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])["asks"]


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=5000)
    parser.add_argument("--asks", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--database", help="reuse a database large_study.py --keep or this --keep left")
    parser.add_argument("--keep", action="store_true", help="keep the database (its name is printed)")
    args = parser.parse_args()
    large_study.check_bytecode()
    database = args.database
    if database is None:
        database = large_study.create_database(args.size)
        large_study.fill(database, args.size)
    loads = [os.getloadavg()[0]]
    results: dict[str, list[dict[str, float]]] = {"ours": [], "optuna": []}
    try:
        for repeat in range(args.repeats):
            for arm in ("ours", "optuna") if repeat % 2 == 0 else ("optuna", "ours"):
                asks = run_arm(arm, database, args.asks)
                results[arm] += asks
                print(json.dumps({"repeat": repeat, "arm": arm, "asks": asks}), flush=True)
                loads.append(os.getloadavg()[0])
    finally:
        if args.keep or args.database:
            print(f"database kept: {database}")
        else:
            drop_database(database)
    print(
        f"\n{args.size} trials, {args.asks} asks x {args.repeats} repeats per arm; load {min(loads):.1f}-{max(loads):.1f}"
    )
    for arm, asks in results.items():
        print(
            f"{arm:7} sampling {summary([a['sample_s'] for a in asks])}; "
            f"ask + suggestions {summary([a['ask_s'] for a in asks])}; tell {summary([a['tell_s'] for a in asks])}"
        )


if __name__ == "__main__":
    main()
