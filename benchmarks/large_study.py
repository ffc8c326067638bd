"""Large studies on MariaDB: a job's start, its later trials, and the launcher's reads, on a study of
5,000 (or 10,000) finished trials of the built-in search space, side by side with a fresh study and
with plain Optuna on the same study.

    .venv/bin/python benchmarks/large_study.py [--sizes 0 5000 10000] [--repeats 3]
                                               [--only start trials cli plain] [--keep]

Each size gets a database of its own on the machine's MariaDB (``large_<size>_<random>``,
dropped at the end unless ``--keep``), filled by :func:`fill`: trials of the built-in search
space as a study run by 50 jobs with the median pruner leaves them (45% COMPLETE, the rest
PRUNED after 1-9 of 10 epochs), with their parameters, intermediate values, the metrics and
job name a job records, and a value that depends on the parameters. The rows go in with a
few bulk INSERTs into Optuna's own tables (``optuna.storages._rdb.models``): Optuna would take
minutes to add 10,000 trials one by one, and what is measured is reading them.

Arms (each repeat runs every size and arm once, interleaved, so that they see the same load):

``start``   the image's ``train`` (the real command, a job folder as SageMaker lays it out,
            3 trials of 3 epochs on the 8x8 digits) joining the study: process start to the
            log line "Trial N started" of its first trial, and each later trial's sampling and
            bookkeeping (trial time minus its epochs' time: log lines "Trial N started" to the
            first epoch's metric line, and the last epoch's line to the next "Trial N started").
``plain``   plain Optuna on the same study: ``optuna.load_study`` and the first ``study.ask``
            with the built-in search space and TPE with constant liar (Optuna's own sampler),
            then 3 more asks, in a fresh process (imports not counted).
``cli``     ``sagemaker-optuna status``, ``best`` (its database read: ``--json`` up to the AWS
            call, which fails here without AWS: the time to that failure is the read) and
            ``report`` (trials.csv, best_trial.json, 8 plots), each a fresh process, wall clock.

Prints one JSON line per measurement and a table of medians (min-max) at the end, with the
1-minute load average before and after.

Bytecode: the image has it for everything a job imports (docker/warm_imports.py). A venv without
it (``uv pip`` writes none; ``PYTHONDONTWRITEBYTECODE=1`` keeps Python from writing it) compiles
about 1,000 modules at every job's start, 2 s more on this machine: the script says so at start.
Write it once with ``env -u PYTHONDONTWRITEBYTECODE .venv/bin/python -m compileall -q
.venv/lib/python3.11/site-packages core entrypoint launcher serving``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import sqlalchemy
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages._rdb import models
from optuna.trial import TrialState
from trial_overhead import drop_database, fresh_database  # benchmarks/ is the script's folder

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
STUDY = "large"
EPOCHS = 10  # of the trials in the filled study (the default epochs)
JOB_EPOCHS = 3  # of the trials the measured job runs
N_JOBS = 50

DISTS = {
    "n_layers": IntDistribution(1, 3),
    "n_units_l0": IntDistribution(4, 128, log=True),
    "n_units_l1": IntDistribution(4, 128, log=True),
    "n_units_l2": IntDistribution(4, 128, log=True),
    "optimizer": CategoricalDistribution(["Adam", "MomentumSGD"]),
    "adam_alpha": FloatDistribution(1e-5, 1e-1, log=True),
    "momentum_sgd_lr": FloatDistribution(1e-5, 1e-1, log=True),
    "weight_decay": FloatDistribution(1e-10, 1e-3, log=True),
}


def url(database: str) -> str:
    return f"mysql+mysqlconnector://root@127.0.0.1:3306/{database}"


def create_database(size: int) -> str:
    return fresh_database(f"large_{size}")


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _params(rng: np.random.Generator) -> dict[str, object]:
    p: dict[str, object] = {"n_layers": int(rng.integers(1, 4))}
    for i in range(p["n_layers"]):
        p[f"n_units_l{i}"] = int(round(_log_uniform(rng, 4, 128.49)))
    p["optimizer"] = str(rng.choice(["Adam", "MomentumSGD"]))
    key = "adam_alpha" if p["optimizer"] == "Adam" else "momentum_sgd_lr"
    p[key] = _log_uniform(rng, 1e-5, 1e-1)
    p["weight_decay"] = _log_uniform(rng, 1e-10, 1e-3)
    return p


def _accuracy(p: dict[str, object], rng: np.random.Generator) -> float:
    """A plausible validation accuracy: best near lr 1e-3 (Adam) / 3e-2 (SGD), wider nets better."""
    lr = float(p.get("adam_alpha") or p.get("momentum_sgd_lr"))
    best_lr = 1e-3 if p["optimizer"] == "Adam" else 3e-2
    width = math.log(int(p["n_units_l0"])) / math.log(128)
    acc = 0.97 - 0.08 * (math.log10(lr / best_lr)) ** 2 - 0.05 * (1 - width) + rng.normal(0, 0.01)
    return float(min(max(acc, 0.05), 0.995))


def fill(database: str, size: int, seed: int = 0) -> None:
    """``size`` finished trials of the built-in search space, as 50 jobs with pruning leave them."""
    storage = optuna.storages.RDBStorage(url(database))  # Optuna creates its schema and the study
    optuna.create_study(storage=storage, study_name=STUDY, direction="maximize")
    storage.engine.dispose()
    if size == 0:
        return
    engine = sqlalchemy.create_engine(url(database))
    t = {
        name: model.__table__
        for name, model in [
            ("trials", models.TrialModel),
            ("params", models.TrialParamModel),
            ("values", models.TrialValueModel),
            ("inter", models.TrialIntermediateValueModel),
            ("attrs", models.TrialUserAttributeModel),
            ("studies", models.StudyModel),
        ]
    }
    rng = np.random.default_rng(seed)
    start = dt.datetime(2026, 11, 1)
    with engine.begin() as conn:
        study_id = conn.execute(sqlalchemy.select(t["studies"].c.study_id)).scalar_one()
        rows, plans = [], []
        for number in range(size):
            p = _params(rng)
            acc = _accuracy(p, rng)
            complete = rng.random() < 0.45
            epochs = EPOCHS if complete else int(rng.integers(1, EPOCHS))
            began = start + dt.timedelta(seconds=3 * number)
            rows.append(
                {
                    "number": number,
                    "study_id": study_id,
                    "state": TrialState.COMPLETE if complete else TrialState.PRUNED,
                    "datetime_start": began,
                    "datetime_complete": began + dt.timedelta(seconds=epochs * 0.3),
                }
            )
            plans.append((p, acc, complete, epochs))
        conn.execute(t["trials"].insert(), rows)
        ids = dict(
            conn.execute(
                sqlalchemy.select(t["trials"].c.number, t["trials"].c.trial_id).where(
                    t["trials"].c.study_id == study_id
                )
            ).all()
        )
        params, values, inter, attrs = [], [], [], []
        for number, (p, acc, complete, epochs) in enumerate(plans):
            tid = ids[number]
            for name, value in p.items():
                d = DISTS[name]
                params.append(
                    {
                        "trial_id": tid,
                        "param_name": name,
                        "param_value": d.to_internal_repr(value),
                        "distribution_json": optuna.distributions.distribution_to_json(d),
                    }
                )
            curve = [acc - 0.3 * math.exp(-e / 2.0) for e in range(1, epochs + 1)]
            if complete:
                values.append({"trial_id": tid, "objective": 0, "value": curve[-1], "value_type": "FINITE"})
            for step, v in enumerate(curve, 1):
                inter.append(
                    {
                        "trial_id": tid,
                        "step": step,
                        "intermediate_value": v,
                        "intermediate_value_type": "FINITE",
                    }
                )
            metrics = {
                "job_name": f"job-{number % N_JOBS:03d}",
                "loss": 0.3 * math.exp(-epochs / 3),
                "accuracy": curve[-1] + 0.01,
                "validation_loss": 0.35 * math.exp(-epochs / 3),
                "validation_accuracy": curve[-1],
                "epochs": epochs,
            }
            attrs += [{"trial_id": tid, "key": k, "value_json": json.dumps(v)} for k, v in metrics.items()]
        for table, batch in (("params", params), ("values", values), ("inter", inter), ("attrs", attrs)):
            for i in range(0, len(batch), 20_000):
                conn.execute(t[table].insert(), batch[i : i + 20_000])
    engine.dispose()


# --- the job ------------------------------------------------------------------------------------


def run_job(database: str, trials: int = 3) -> dict[str, float]:
    """The image's ``train`` joining the study: seconds to its first trial, and each later
    trial's time outside its epochs (sampling, bookkeeping)."""
    sys.path.insert(0, str(REPO))
    from devtools.localjob import digits_channels, train_env, write_job_folder

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        hps = {
            "n-trials": str(trials),
            "epochs": str(JOB_EPOCHS),
            "seed": "1",
            "study-name": STUDY,
            "storage": f"mysql://root@127.0.0.1:3306/{database}",
        }
        write_job_folder(base, hps, digits_channels())
        env = train_env(base, TRAINING_JOB_NAME=f"bench-{uuid.uuid4().hex[:6]}")
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [str(VENV_BIN / "train")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp,
        )
        lines = [(time.perf_counter() - t0, line) for line in proc.stdout]  # stamped as they arrive
        proc.wait()
        end = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError("train failed:\n" + "".join(line for _, line in lines[-40:]))
    # "Trial N started" is logged once the trial exists (after ask); its parameters are sampled
    # in the objective, before the first epoch's metric line "trial=N epoch=1".
    started = [t for t, line in lines if re.search(r"Trial \d+ started", line)]
    epoch1 = [t for t, line in lines if re.match(r"trial=\d+ epoch=1 ", line)]
    ended = [t for t, line in lines if re.search(r"Trial \d+ (finished|pruned|failed)", line)]
    # Sampling and bookkeeping of the later trials: the previous trial's end (its log line) to
    # this one's first epoch line, minus nothing: one epoch of 3 is inside, the same in both arms.
    later = [e - f for f, e in zip(ended, epoch1[1:], strict=False)]
    return {
        "first_trial_s": started[0],
        "first_epoch_s": epoch1[0],
        "sampling_s": epoch1[0] - started[0],
        "later_trial_s": statistics.median(later) if later else math.nan,
        "exit_s": end,
    }


PLAIN = r"""
import sys, time, json, warnings
import optuna
warnings.simplefilter("ignore")
optuna.logging.set_verbosity(optuna.logging.WARNING)
url = sys.argv[1]
def space(trial):
    n = trial.suggest_int("n_layers", 1, 3)
    for i in range(n):
        trial.suggest_int(f"n_units_l{i}", 4, 128, log=True)
    o = trial.suggest_categorical("optimizer", ["Adam", "MomentumSGD"])
    trial.suggest_float("adam_alpha" if o == "Adam" else "momentum_sgd_lr", 1e-5, 1e-1, log=True)
    trial.suggest_float("weight_decay", 1e-10, 1e-3, log=True)
t0 = time.perf_counter()
study = optuna.load_study(study_name="large", storage=url,
                          sampler=optuna.samplers.TPESampler(seed=1, constant_liar=True))
t1 = time.perf_counter()
asks = []
for _ in range(4):
    a = time.perf_counter()
    trial = study.ask()
    space(trial)
    asks.append(time.perf_counter() - a)
    study.tell(trial, 0.5)
print(json.dumps({"load_s": t1 - t0, "first_ask_s": asks[0], "later_ask_s": sorted(asks[1:])[1]}))
"""


def run_plain(database: str) -> dict[str, float]:
    out = subprocess.run(
        [str(VENV_BIN / "python"), "-c", PLAIN, url(database)], capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_cli(database: str, aws: dict[str, str]) -> dict[str, float]:
    """status, best and report, each a fresh process of the launcher's CLI (best against a moto
    server that knows the study's jobs, without reading model.json from S3: --no-verify)."""
    where = ["--study", STUDY, "--storage", f"mysql://root@127.0.0.1:3306/{database}"]
    env = {**os.environ, **aws}
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in (
            ("status_s", ["status", *where, "--json"]),
            ("best_s", ["best", *where, "--json", "--no-verify"]),
            ("report_s", ["report", *where, "--out", str(Path(tmp) / "report")]),
        ):
            t0 = time.perf_counter()
            out = subprocess.run(
                [str(VENV_BIN / "sagemaker-optuna"), *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=900,
            )
            result[name] = time.perf_counter() - t0
            if out.returncode != 0:
                raise RuntimeError(f"{args[0]} failed:\n{out.stderr[-3000:]}")
        result["report_files"] = len(list((Path(tmp) / "report").rglob("*.*")))
    return result


@contextlib.contextmanager
def moto_with_jobs() -> Iterator[dict[str, str]]:
    """A moto server whose SageMaker knows the filled study's jobs (Completed, with a model)."""
    sys.path.insert(0, str(REPO))
    import boto3

    from tests.support.moto_setup import create_training_job
    from tests.support.services import aws_env, moto_server

    with moto_server() as endpoint:
        env = aws_env(endpoint)
        sagemaker = boto3.client(
            "sagemaker",
            endpoint_url=endpoint,
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        role = "arn:aws:iam::123456789012:role/bench"
        for i in range(N_JOBS):
            create_training_job(sagemaker, f"job-{i:03d}", "image:latest", role, "s3://bench/out")
        yield env


def load() -> float:
    return os.getloadavg()[0]


def check_bytecode() -> None:
    """Say when Chainer has no bytecode (then the jobs' starts include compiling; not imported here)."""
    import importlib.util

    origin = importlib.util.find_spec("chainer").origin
    if not any((Path(origin).parent / "__pycache__").glob("__init__.*.pyc")):
        print(
            "note: the venv has no bytecode, so every job's start compiles its modules (the image "
            "does not): see this script's docstring",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 5000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--only", nargs="+", default=["start", "plain", "cli"], choices=["start", "plain", "cli"]
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases (their names are printed)")
    parser.add_argument("--database", nargs="*", default=[], help="SIZE=NAME: reuse a database --keep left")
    args = parser.parse_args()
    reuse = dict(item.split("=", 1) for item in args.database)
    dbs: dict[int, str] = {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"load before: {load():.2f}", flush=True)
    check_bytecode()
    stack = contextlib.ExitStack()
    try:
        for size in args.sizes:
            if str(size) in reuse:
                dbs[size] = reuse[str(size)]
                continue
            dbs[size] = create_database(size)
            t0 = time.perf_counter()
            fill(dbs[size], size)
            print(f"filled {dbs[size]} with {size} trials in {time.perf_counter() - t0:.1f} s", flush=True)
        results: dict[tuple[int, str], list[float]] = {}
        aws = stack.enter_context(moto_with_jobs()) if "cli" in args.only else {}
        for repeat in range(args.repeats):
            for size in args.sizes:
                if "start" in args.only:
                    # A fresh study for size 0 every repeat: the job's own trials must not pile up.
                    db = dbs[size]
                    if size == 0:
                        db = create_database(0)
                        fill(db, 0)
                    r = run_job(db)
                    if size == 0:
                        drop_database(db)
                    _record(results, size, r, repeat)
                if "plain" in args.only and size > 0:
                    _record(results, size, {f"plain_{k}": v for k, v in run_plain(dbs[size]).items()}, repeat)
                if "cli" in args.only and size > 0:
                    _record(results, size, run_cli(dbs[size], aws), repeat)
        print(f"load after: {load():.2f}")
        print("| trials | measure | median | min-max |")
        print("| --- | --- | --- | --- |")
        for (size, key), vals in sorted(results.items()):
            print(f"| {size} | {key} | {statistics.median(vals):.3f} | {min(vals):.3f}-{max(vals):.3f} |")
    finally:
        stack.close()
        if args.keep:
            print("kept:", " ".join(f"--database {s}={n}" for s, n in dbs.items()))
        else:
            for size, name in dbs.items():
                if str(size) not in reuse:
                    drop_database(name)


def _record(results: dict, size: int, r: dict[str, float], repeat: int) -> None:
    print(json.dumps({"trials": size, "repeat": repeat, "load": round(load(), 2), **r}), flush=True)
    for key, value in r.items():
        results.setdefault((size, key), []).append(value)


if __name__ == "__main__":
    main()
