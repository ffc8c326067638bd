"""One job on several hosts: 1 vs 2 vs 4 hosts at equal total trials, and 4 hosts through the
leader's gRPC proxy vs 4 separate jobs on MariaDB.

    .venv/bin/python benchmarks/hosts.py [--trials 32] [--repeats 3] [--wait 1.0]

Every host is a real `train` process with its own /opt/ml and resourceconfig.json on a loopback
address of its own (tests/support/hosts.py lays them out). The objective is a model-module whose trials
wait ``--wait`` seconds without the CPU, then train a linear layer for one epoch, so that this
2-core machine measures coordination, not compute; on the 8x8 digits and on the 784-wide
generated data of benchmarks/training_loop.py (20,000 examples). Arms, interleaved per repeat:

  digits-1, digits-2, digits-4   one job of 1, 2, 4 hosts, --trials in all (n-trials per host:
                                 trials / hosts); 1 host is a plain job on its embedded study
  784-1, 784-2, 784-4            the same on the 784-wide data
  mariadb-4x1                    4 separate one-host jobs on one study in the machine's MariaDB
                                 (storage URL, a fresh database), trials / 4 each, digits

Figures: wall clock (first process started to last exited), trials/s in the steady state (trials
/ (last trial's end - first trial's start), from the study), parallel efficiency (trials/s over N
x one host's), the same in the steady state (the hosts' own rates added up: start-up skew
between hosts left out), and seconds per trial on a host ((its last end - its first start) / its trials),
whose excess over --wait is the per-trial overhead of the storage path. Medians over repeats,
with the range.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import mysql.connector
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.training_loop import make_data  # noqa: E402
from tests.support.hosts import HostJob  # noqa: E402

ROOT = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
HPS = {"epochs": "1", "seed": "1", "pruner": "none", "db-retry-timeout": "60"}


def channels_784() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    data = make_data()
    return {"train": (data.train.x, data.train.y), "test": (data.test.x, data.test.y)}


def parse(ts: str) -> float:
    return dt.datetime.fromisoformat(ts).timestamp()


def figures(rows: list[tuple[str, str, str]], wall: float) -> dict[str, float]:
    """rows: (host or job, start, complete) of every finished trial."""
    starts, ends = [parse(r[1]) for r in rows], [parse(r[2]) for r in rows]
    per_host: dict[str, list[tuple[float, float]]] = {}
    for (who, _, _), s, e in zip(rows, starts, ends, strict=True):
        per_host.setdefault(who, []).append((s, e))
    per_trial = [(max(e for _, e in v) - min(s for s, _ in v)) / len(v) for v in per_host.values()]
    return {
        "wall": wall,
        "trials_per_s": len(rows) / (max(ends) - min(starts)),
        "steady_per_s": sum(1 / p for p in per_trial),
        "s_per_trial": statistics.mean(per_trial),
        "trials": len(rows),
    }


def run_hosts(root: Path, n: int, trials: int, wait: float, channels=None) -> dict[str, float]:
    hps = {**HPS, "n-trials": str(trials // n)}
    job = HostJob(root, n, hps, waiting_model=True, name=f"bench-{uuid.uuid4().hex[:6]}", channels=channels)
    started = time.monotonic()
    job.start_all(WAIT_S=str(wait))
    codes = job.finish_all(1800)
    wall = time.monotonic() - started
    assert set(codes.values()) == {0}, {h: p.stderr()[-2000:] for h, p in job.procs.items()}
    conn = sqlite3.connect(job.study_file())
    rows = conn.execute(
        "SELECT COALESCE(a.value_json, 'one'), t.datetime_start, t.datetime_complete FROM trials t "
        "LEFT JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'host' "
        "WHERE t.state IN ('COMPLETE', 'PRUNED')"
    ).fetchall()
    conn.close()
    return figures(rows, wall)


def run_mariadb_jobs(root: Path, jobs: int, trials: int, wait: float) -> dict[str, float]:
    name = f"bench_hosts_{uuid.uuid4().hex[:8]}"
    conn = mysql.connector.connect(**ROOT)
    conn.cursor().execute(f"CREATE DATABASE {name}")
    try:
        storage = f"mysql+mysqlconnector://root@127.0.0.1:3306/{name}"
        hps = {**HPS, "n-trials": str(trials // jobs), "storage": storage, "study-name": "bench"}
        separate = [
            HostJob(root / f"job{i}", 1, hps, waiting_model=True, name=f"bench-job-{i}") for i in range(jobs)
        ]
        started = time.monotonic()
        for job in separate:
            job.start_all(WAIT_S=str(wait))
        for job in separate:
            codes = job.finish_all(1800)
            assert set(codes.values()) == {0}, [p.stderr()[-2000:] for p in job.procs.values()]
        wall = time.monotonic() - started
        cur = conn.cursor()
        cur.execute(
            f"SELECT a.value_json, t.datetime_start, t.datetime_complete FROM {name}.trials t "
            f"JOIN {name}.trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'job_name' "
            "WHERE t.state IN ('COMPLETE', 'PRUNED')"
        )
        rows = [(who, str(s), str(e)) for who, s, e in cur.fetchall()]
    finally:
        conn.cursor().execute(f"DROP DATABASE {name}")
        conn.close()
    return figures(rows, wall)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=32, help="total trials per arm (divisible by 4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--wait", type=float, default=1.0, help="seconds each trial waits without the CPU")
    parser.add_argument("--arms", default="digits-1,digits-2,digits-4,784-1,784-2,784-4,mariadb-4x1")
    args = parser.parse_args()
    arms = args.arms.split(",")
    wide = channels_784() if any(a.startswith("784") for a in arms) else None
    results: dict[str, list[dict[str, float]]] = {a: [] for a in arms}
    loads = [os.getloadavg()[0]]
    for repeat in range(args.repeats):
        for arm in arms:
            with tempfile.TemporaryDirectory(prefix=f"bench-{arm}-") as tmp:
                kind, _, n = arm.partition("-")
                if kind == "mariadb":
                    result = run_mariadb_jobs(Path(tmp), 4, args.trials, args.wait)
                else:
                    channels = wide if kind == "784" else None
                    result = run_hosts(Path(tmp), int(n), args.trials, args.wait, channels)
            results[arm].append(result)
            loads.append(os.getloadavg()[0])
            print(
                f"repeat {repeat} {arm}: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()), flush=True
            )

    def med(arm: str, key: str) -> tuple[float, float, float]:
        values = [r[key] for r in results[arm]]
        return statistics.median(values), min(values), max(values)

    print(
        f"\n{args.trials} trials per arm, trials wait {args.wait:g} s; load {min(loads):.1f}-{max(loads):.1f}"
    )
    print(
        f"{'arm':<12} {'wall s':>18} {'trials/s':>20} {'eff.':>5} {'steady trials/s':>20} {'eff.':>5} "
        f"{'s/trial/host':>20}"
    )
    for arm in arms:
        kind = arm.split("-")[0]
        base = "digits-1" if kind == "mariadb" else f"{kind}-1"
        n = 4 if kind == "mariadb" else int(arm.split("-")[1])
        w, t, st, p = (med(arm, k) for k in ("wall", "trials_per_s", "steady_per_s", "s_per_trial"))
        eff = steady_eff = ""
        if results.get(base):
            eff = f"{t[0] / (n * med(base, 'trials_per_s')[0]):.0%}"
            steady_eff = f"{st[0] / (n * med(base, 'steady_per_s')[0]):.0%}"
        print(
            f"{arm:<12} {w[0]:6.1f} ({w[1]:.1f}-{w[2]:.1f}) {t[0]:7.3f} ({t[1]:.3f}-{t[2]:.3f}) {eff:>5} "
            f"{st[0]:7.3f} ({st[1]:.3f}-{st[2]:.3f}) {steady_eff:>5} {p[0]:6.3f} ({p[1]:.3f}-{p[2]:.3f})"
        )
    if "digits-4" in results and "mariadb-4x1" in results:
        proxy, db = med("digits-4", "s_per_trial")[0], med("mariadb-4x1", "s_per_trial")[0]
        print(
            f"\nper trial on a host: proxy {proxy:.3f} s vs MariaDB {db:.3f} s: {proxy / db - 1:+.1%}; "
            f"overhead above the wait: proxy {proxy - args.wait:.3f} s, MariaDB {db - args.wait:.3f} s"
        )


if __name__ == "__main__":
    main()
