"""Reading a large study's trials on MariaDB: the lean read's two ways, side by side in one
process, interleaved, against Optuna's own read.

    .venv/bin/python benchmarks/read_trials.py [--sizes 5000 10000] [--repeats 5] [--optuna]

``packed``  hpo_study/optuna_private.LeanReadStorage on MySQL: one row per trial, its child
            rows packed by the server into JSON arrays (what a job and the launcher do).
``rows``    the same storage reading the six tables row by row (what it does on SQLite and
            PostgreSQL, and on a MySQL without JSON_ARRAYAGG).
``optuna``  Optuna's ``RDBStorage._get_trials`` (ORM objects), with ``--optuna``.

Each arm reads every trial of the study (the cache's first fill when a job joins). Wall clock
and the process's CPU time (the client's work; the rest is the server's and waiting for a core
on a loaded machine). The databases (``readbench_<size>_<random>``, filled as
benchmarks/large_study.py fills them) are dropped at the end.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from large_study import STUDY, fill, url  # noqa: E402  (benchmarks/ is the script's folder)
from trial_overhead import drop_database, fresh_database  # noqa: E402

from hpo_study import optuna_private  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--optuna", action="store_true", help="also Optuna's own read (slow)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    arms = ["rows", "packed"] + (["optuna"] if args.optuna else [])
    print(f"load before: {os.getloadavg()[0]:.2f}", flush=True)
    dbs = {}
    try:
        for size in args.sizes:
            dbs[size] = fresh_database(f"readbench_{size}")
            fill(dbs[size], size)
        results: dict[tuple[int, str], list[tuple[float, float]]] = {}
        for repeat in range(args.repeats):
            for size, db in dbs.items():
                ours = optuna_private.LeanReadStorage(url(db), skip_table_creation=True)
                theirs = optuna.storages.RDBStorage(url(db), skip_table_creation=True)
                sid = ours.get_study_id_from_name(STUDY)
                for arm in arms:
                    ours._packs = arm == "packed"
                    storage = theirs if arm == "optuna" else ours
                    gc.collect()
                    t0, c0 = time.perf_counter(), time.process_time()
                    trials = storage._get_trials(sid, None, set(), -1)
                    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                    assert len(trials) == size
                    results.setdefault((size, arm), []).append((wall, cpu))
                    print(
                        f"repeat {repeat} trials {size} {arm}: wall {wall:.3f} s, cpu {cpu:.3f} s, "
                        f"load {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
                ours.engine.dispose()
                theirs.engine.dispose()
        print(f"load after: {os.getloadavg()[0]:.2f}")
        print("| trials | read | wall median (min-max) | client CPU median (min-max) |")
        print("| --- | --- | --- | --- |")
        for (size, arm), vals in sorted(results.items()):
            walls, cpus = [w for w, _ in vals], [c for _, c in vals]
            print(
                f"| {size} | {arm} | {statistics.median(walls):.3f} ({min(walls):.3f}-{max(walls):.3f}) | "
                f"{statistics.median(cpus):.3f} ({min(cpus):.3f}-{max(cpus):.3f}) |"
            )
    finally:
        for name in dbs.values():
            drop_database(name)


if __name__ == "__main__":
    main()
