"""Per-trial overhead and parallel efficiency: our trial runner against a plain Optuna loop,
both on the machine's MariaDB.

    .venv/bin/python benchmarks/trial_overhead.py [--trials 40] [--workers 16] [--per-worker 4]

1. One process, ``--trials`` trials of a 0.1 s objective: seconds per trial and the overhead
   above the objective, for ``study.optimize`` (TPE with constant liar, RDBStorage) and for
   our runner (schema lock, heartbeat thread, retry wrappers, per-trial checks), both with one
   callback, as a job has its model keeper.
2. ``--workers`` processes, each running ``--per-worker`` trials of a 1 s objective on one
   study: efficiency = objective seconds / (workers x wall seconds), wall measured from a
   barrier after start-up. Plain Optuna gets its schema created beforehand (it races
   otherwise); ours starts on an empty database. Both join the study before the barrier, so
   the figure is the steady state of many jobs on one study (start-up: benchmarks/startup.py).
   A third arm runs plain Optuna in processes that have also loaded what a real training
   script loads (Chainer and boto3, as the AWS sample's script does; ours loads them too):
   on 2 cores shared by 16 processes, a bigger process costs efficiency by itself.
   ``--proxy`` adds the arm of one job of several hosts on an embedded study (issue 21): a
   leader process serves the study (SQLite) with entrypoint/multihost/proxy.ProxyServer, Optuna's gRPC
   proxy, and each worker process runs our trial runner through entrypoint/multihost/proxy.ProxyClient,
   as a host of such a job does. Its connections are the TCP connections to the proxy's port
   (the study's SQLite file has one writer, the leader); failed trials are read from the file.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
import uuid
from pathlib import Path

import mysql.connector
import optuna

ROOT = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


def objective_factory(seconds: float):
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -10, 10)
        y = trial.suggest_int("y", 1, 128, log=True)
        time.sleep(seconds)
        return -((x - 2) ** 2) - y / 100

    return objective


def keep_nothing(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """A callback, as a real job has one (our best-model keeper): both arms read each
    finished trial back once for it."""


def fresh_database(prefix: str = "bench") -> str:
    """A new empty database on the machine's MariaDB (dropped by drop_database)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn = mysql.connector.connect(**ROOT)
    conn.cursor().execute(f"CREATE DATABASE {name}")
    conn.close()
    return name


def drop_database(name: str) -> None:
    conn = mysql.connector.connect(**ROOT)
    conn.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
    conn.close()


def plain_worker(db: str, n: int, seconds: float, barrier, out) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"mysql+mysqlconnector://root@127.0.0.1:3306/{db}"
    study = optuna.load_study(
        study_name="bench", storage=storage, sampler=optuna.samplers.TPESampler(constant_liar=True)
    )
    barrier.wait()
    t0 = time.perf_counter()
    study.optimize(objective_factory(seconds), n_trials=n, callbacks=[keep_nothing])
    out.put((t0, time.perf_counter()))


def plain_worker_with_libraries(db: str, n: int, seconds: float, barrier, out) -> None:
    import boto3  # noqa: F401  (loaded, as in a real training script)
    import chainer  # noqa: F401
    import chainer.links  # noqa: F401

    plain_worker(db, n, seconds, barrier, out)


def our_worker(db: str, n: int, seconds: float, barrier, out) -> None:
    import logging

    from entrypoint.job.context import JobContext
    from entrypoint.job.stopping import Guard
    from entrypoint.model.checkpoint import Progress
    from entrypoint.study import join
    from entrypoint.trials import search
    from entrypoint.trials.runner import TrialRunner
    from hpo_study import settings
    from hpo_study.database import locate

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.disable(logging.WARNING)
    s = settings.parse(
        {"storage": f"mysql://root@127.0.0.1:3306/{db}", "study-name": "bench", "n-trials": str(n)}
    )
    database = locate.resolve(s, "/tmp")
    study, rdb = join.join_study(s, database, search.make_sampler(s, None), search.make_pruner(s))
    barrier.wait()
    t0 = time.perf_counter()
    runner = TrialRunner(
        JobContext(s, "bench", Guard()),
        study,
        rdb,
        objective_factory(seconds),
        Progress(None, "bench", "w"),
        [keep_nothing],
    )
    runner.run()
    out.put((t0, time.perf_counter()))


class ConnectionWatch:
    """Samples the server's connections to one database (information_schema.PROCESSLIST) every
    0.1 s from a thread of its own; keeps the peak."""

    def __init__(self, db: str) -> None:
        import threading

        self.db, self.peak, self._stop = db, 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        conn = mysql.connector.connect(**ROOT)
        cur = conn.cursor()
        while not self._stop.wait(0.1):
            cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s", (self.db,))
            self.peak = max(self.peak, cur.fetchone()[0])
        conn.close()

    def __enter__(self) -> ConnectionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def failed_trials(db: str) -> int:
    conn = mysql.connector.connect(**ROOT, database=db)
    cur = conn.cursor()
    cur.execute("SELECT COUNT(*) FROM trials WHERE state = 'FAIL'")
    n = cur.fetchone()[0]
    conn.close()
    return n


def proxy_leader(folder: str, port: int, ready, done) -> None:
    """The leader host: the embedded study, served on 127.0.0.1:port until ``done`` is set."""
    import logging

    from entrypoint.multihost import proxy
    from entrypoint.study import join
    from entrypoint.trials import search
    from hpo_study import settings
    from hpo_study.database import locate

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.disable(logging.WARNING)
    s = settings.parse({"study-name": "bench"})
    study, _ = join.join_study(
        s, locate.resolve(s, folder), search.make_sampler(s, None), search.make_pruner(s)
    )
    with proxy.ProxyServer(study, "127.0.0.1", port, s.heartbeat_interval):
        ready.set()
        done.wait()


def proxy_worker(port: int, n: int, seconds: float, barrier, out) -> None:
    """A host of the job: our trial runner, every storage call through the leader's proxy."""
    import logging

    from entrypoint.job.context import JobContext
    from entrypoint.job.stopping import Guard
    from entrypoint.model.checkpoint import Progress
    from entrypoint.multihost import proxy
    from entrypoint.trials import search
    from entrypoint.trials.runner import TrialRunner
    from hpo_study import settings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.disable(logging.WARNING)
    s = settings.parse({"study-name": "bench", "n-trials": str(n)})
    guard = Guard()
    client = proxy.ProxyClient("127.0.0.1", port, proxy.call_timeout(s.db_retry_timeout), None, guard.stop)
    study = optuna.load_study(
        study_name="bench", storage=client, sampler=search.make_sampler(s, None), pruner=search.make_pruner(s)
    )
    barrier.wait()
    t0 = time.perf_counter()
    runner = TrialRunner(
        JobContext(s, "bench", guard),
        study,
        client,
        objective_factory(seconds),
        Progress(None, "bench", "w"),
        [keep_nothing],
    )
    runner.run()
    out.put((t0, time.perf_counter()))
    client.close()


class PortWatch(ConnectionWatch):
    """The peak of established TCP connections to a local port (/proc/net/tcp and tcp6)."""

    def __init__(self, port: int) -> None:
        super().__init__("")
        self.port = port

    def count(self) -> int:
        n = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table, encoding="ascii") as f:
                next(f)
                for line in f:
                    local, state = line.split()[1], line.split()[3]
                    n += state == "01" and int(local.rsplit(":", 1)[1], 16) == self.port
        return n

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, self.count())


def run_proxy_workers(workers: int, n: int, seconds: float) -> dict[str, float]:
    """As run_workers, for one job of ``workers`` hosts through the leader's gRPC proxy."""
    import socket
    import sqlite3
    import tempfile

    with tempfile.TemporaryDirectory() as folder, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        ctx = mp.get_context("spawn")
        ready, done = ctx.Event(), ctx.Event()
        leader = ctx.Process(target=proxy_leader, args=(folder, port, ready, done))
        leader.start()
        try:
            if not ready.wait(120):
                raise RuntimeError("the proxy leader did not start")
            watch = PortWatch(port)
            spans = run_spawned(ctx, proxy_worker, (port, n, seconds), workers, watch)
        finally:
            done.set()
            leader.join(60)
        db = sqlite3.connect(next(Path(folder).rglob("*.db")))
        failed = db.execute("SELECT COUNT(*) FROM trials WHERE state = 'FAIL'").fetchone()[0]
        db.close()
    start, end = min(s for s, _ in spans), max(e for _, e in spans)
    return {"start": start, "end": end, "peak_connections": watch.peak, "failed": failed}


def run_spawned(ctx, target, args: tuple, workers: int, watch) -> list[tuple[float, float]]:
    """Start ``workers`` processes of ``target(*args, barrier, out)`` while ``watch`` counts
    connections; their (start, end) spans after the barrier."""
    barrier, out = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, out)) for _ in range(workers)]
    with watch:
        for p in procs:
            p.start()
        spans = [out.get(timeout=1800) for _ in procs]
        for p in procs:
            p.join()
    if any(p.exitcode for p in procs):
        raise RuntimeError("a worker failed")
    return spans


def run_workers(target, workers: int, n: int, seconds: float, prepare_schema: bool) -> dict[str, float]:
    """Start, end (after the barrier), peak connections to the study's database, failed trials."""
    db = fresh_database()
    try:
        if prepare_schema:
            optuna.create_study(
                study_name="bench",
                storage=f"mysql+mysqlconnector://root@127.0.0.1:3306/{db}",
                direction="maximize",
            )
        watch = ConnectionWatch(db)
        spans = run_spawned(mp.get_context("spawn"), target, (db, n, seconds), workers, watch)
        start, end = min(s for s, _ in spans), max(e for _, e in spans)
        return {"start": start, "end": end, "peak_connections": watch.peak, "failed": failed_trials(db)}
    finally:
        drop_database(db)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--per-worker", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=("single", "parallel"))
    parser.add_argument(
        "--no-libraries-arm",
        dest="libraries_arm",
        action="store_false",
        help="leave out the arm of plain Optuna with Chainer and boto3 loaded (memory at 64 workers)",
    )
    parser.add_argument(
        "--proxy", action="store_true", help="add one job of --workers hosts through the gRPC proxy"
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    quick = 0.1
    arms = (("plain optuna", plain_worker, True), ("ours", our_worker, False))
    per_trial: dict[str, list[float]] = {name: [] for name, _, _ in arms}
    for _ in range(
        args.repeats if args.only != "parallel" else 0
    ):  # interleaved, so that load from elsewhere hits both arms alike
        for name, target, prepare in arms:
            run = run_workers(target, 1, args.trials, quick, prepare)
            per_trial[name].append((run["end"] - run["start"]) / args.trials)
    for name, values in per_trial.items() if args.only != "parallel" else ():
        med = statistics.median(values)
        print(
            f"{name}: {med * 1000:.1f} ms per trial ({(med - quick) * 1000:.1f} ms above the {quick * 1000:.0f} ms objective), median of {args.repeats}"
        )
    if args.only != "parallel":
        ratio = statistics.median(per_trial["ours"]) / statistics.median(per_trial["plain optuna"])
        print(f"ours / plain per trial: {ratio:.3f}")
    if args.only == "single":
        return

    parallel_arms = [
        arm
        for arm in (
            arms[0],
            ("plain optuna, Chainer and boto3 loaded", plain_worker_with_libraries, True),
            arms[1],
        )
        if args.libraries_arm or arm[1] is not plain_worker_with_libraries
    ]
    if args.proxy:
        parallel_arms.append(("ours, one job of hosts through the gRPC proxy", proxy_worker, False))
    efficiency: dict[str, list[float]] = {name: [] for name, _, _ in parallel_arms}
    peaks: dict[str, list[int]] = {name: [] for name, _, _ in parallel_arms}
    failed: dict[str, list[int]] = {name: [] for name, _, _ in parallel_arms}
    for _ in range(args.repeats):  # interleaved, as above
        for name, target, prepare in parallel_arms:
            load = os.getloadavg()[0]
            if target is proxy_worker:
                run = run_proxy_workers(args.workers, args.per_worker, 1.0)
            else:
                run = run_workers(target, args.workers, args.per_worker, 1.0, prepare)
            efficiency[name].append(args.per_worker * 1.0 / (run["end"] - run["start"]))
            peaks[name].append(run["peak_connections"])
            failed[name].append(run["failed"])
            print(
                f"  {name}: efficiency {efficiency[name][-1]:.0%}, peak {run['peak_connections']} connections "
                f"({run['peak_connections'] / args.workers:.2f} per worker), {run['failed']} failed trials, "
                f"load {load:.1f}",
                flush=True,
            )
    for name, values in efficiency.items():
        print(
            f"{name}: {args.workers} workers x {args.per_worker} trials of 1 s: efficiency "
            f"{statistics.median(values):.0%} (median of {args.repeats}: {', '.join(f'{v:.0%}' for v in values)}); "
            f"peak connections {max(peaks[name])} ({max(peaks[name]) / args.workers:.2f} per worker); "
            f"failed trials {sum(failed[name])}"
        )


if __name__ == "__main__":
    main()
