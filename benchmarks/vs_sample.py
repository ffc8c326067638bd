"""A whole HPO job at equal budget: ours against a faithful re-implementation of the AWS sample's.

    .venv/bin/python benchmarks/vs_sample.py [--seeds 0 1 2] [--trials 20] [--epochs 10]
                                             [--storages sqlite mariadb] [--sigterm 3]

Both arms start as SageMaker starts them: ours with the image's ``train``, the sample's script
with the toolkit's ``train`` in script mode, as the AWS Chainer container runs it (its
``pip install optuna`` at start is left out), on the bundled 8x8 digits (train/test as `make demo`),
20 trials x 10 epochs, batch size 128, seeded TPE, one arm after the other for each seed and
storage (interleaved, so that both see the same load):
  sample  the AWS sample's objective: Chainer's Trainer + StandardUpdater + Evaluator +
          LogReport + PrintReport, every metric of the last epoch one ``set_user_attr`` each,
          every trial's weights saved to model_dir as ``model_<n>.npz``, ``study.optimize``
          with Optuna's default sampler (TPE) and no pruner, and the best trial's file copied
          to ``model.npz`` at the end;
  ours    the real ``train`` command (what the image runs), default hyperparameters (median
          pruner), SAGEMAKER_BASE_DIR pointing at a job folder.
MariaDB: a fresh database per run on the machine's server; SQLite: a fresh file.

Measured from the study each arm leaves: wall clock (process start to exit), CPU seconds of
the job's processes (MariaDB's own not counted; far less sensitive to the machine's load than
wall clock), epochs run,
seconds per epoch run (trial durations / epochs), time from start until the best value so
far reaches 95% of the arm's final best, and the wrap-up (last trial's end to exit).
``--sigterm N``: N runs of ours on MariaDB stopped by SIGTERM during a trial: SIGTERM to exit
and the interrupted trial's end to exit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import mysql.connector
import optuna

ROOT = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
VENV_BIN = Path(sys.executable).parent
STUDY = "bench"
BATCH = 128


# --- the sample's job (its script, run by the toolkit in script mode) -------------------------


def sample_job(storage: str, model_dir: str, data_dir: str, trials: int, epochs: int, seed: int) -> None:
    """The AWS sample's training script, its Optuna and Chainer parts, as it is written."""
    import shutil

    import chainer
    import chainer.functions as F
    import chainer.links as L
    import numpy as np
    from chainer import training
    from chainer.training import extensions

    train_npz, test_npz = np.load(f"{data_dir}/train/data.npz"), np.load(f"{data_dir}/test/data.npz")
    train = chainer.datasets.TupleDataset(train_npz["x"], train_npz["y"])
    test = chainer.datasets.TupleDataset(test_npz["x"], test_npz["y"])
    n_classes = int(max(train_npz["y"].max(), test_npz["y"].max())) + 1

    def create_model(trial):
        n_layers = trial.suggest_int("n_layers", 1, 3)
        layers = []
        for i in range(n_layers):
            n_units = trial.suggest_int(f"n_units_l{i}", 4, 128, log=True)
            layers.append(L.Linear(None, n_units))
            layers.append(F.relu)
        layers.append(L.Linear(None, n_classes))
        return chainer.Sequential(*layers)

    def create_optimizer(trial, model):
        optimizer_name = trial.suggest_categorical("optimizer", ["Adam", "MomentumSGD"])
        if optimizer_name == "Adam":
            adam_alpha = trial.suggest_float("adam_alpha", 1e-5, 1e-1, log=True)
            optimizer = chainer.optimizers.Adam(alpha=adam_alpha)
        else:
            momentum_sgd_lr = trial.suggest_float("momentum_sgd_lr", 1e-5, 1e-1, log=True)
            optimizer = chainer.optimizers.MomentumSGD(lr=momentum_sgd_lr)
        weight_decay = trial.suggest_float("weight_decay", 1e-10, 1e-3, log=True)
        optimizer.setup(model)
        optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(weight_decay))
        return optimizer

    def objective(trial):
        model = L.Classifier(create_model(trial))
        optimizer = create_optimizer(trial, model)
        train_iter = chainer.iterators.SerialIterator(train, BATCH)
        test_iter = chainer.iterators.SerialIterator(test, BATCH, repeat=False, shuffle=False)
        updater = training.StandardUpdater(train_iter, optimizer)
        with tempfile.TemporaryDirectory() as out:
            trainer = training.Trainer(updater, (epochs, "epoch"), out=out)
            trainer.extend(extensions.Evaluator(test_iter, model))
            log_report_extension = extensions.LogReport(log_name=None)
            trainer.extend(
                extensions.PrintReport(
                    [
                        "epoch",
                        "main/loss",
                        "validation/main/loss",
                        "main/accuracy",
                        "validation/main/accuracy",
                    ]
                )
            )
            trainer.extend(log_report_extension)
            trainer.run()
        chainer.serializers.save_npz(os.path.join(model_dir, f"model_{trial.number}.npz"), model)
        log_last = log_report_extension.log[-1]
        for key, value in log_last.items():
            trial.set_user_attr(key, value)
        return log_report_extension.log[-1]["validation/main/accuracy"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=storage,
        study_name=STUDY,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        load_if_exists=True,
    )
    study.optimize(objective, n_trials=trials)
    best = study.best_trial
    shutil.copy(os.path.join(model_dir, f"model_{best.number}.npz"), os.path.join(model_dir, "model.npz"))
    print(f"best_trial={best.number} best_value={best.value}")


# --- the runs -----------------------------------------------------------------------------------


def fresh_mariadb() -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    conn = mysql.connector.connect(**ROOT)
    conn.cursor().execute(f"CREATE DATABASE {name}")
    conn.close()
    return name


def drop_mariadb(name: str) -> None:
    conn = mysql.connector.connect(**ROOT)
    conn.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
    conn.close()


def job_folder(base: Path, hps: dict[str, str]) -> Path:
    sys.path.insert(
        0, str(Path(__file__).resolve().parents[1])
    )  # devtools/ ships in no package: the repository
    from devtools.localjob import digits_channels, write_job_folder

    return write_job_folder(base, hps, digits_channels())


SAMPLE_SCRIPT = """import argparse, os, sys
sys.path.insert(0, {folder!r})
import vs_sample
p = argparse.ArgumentParser()
for key in ("storage", "trials", "epochs", "seed"):
    p.add_argument("--" + key)
a = p.parse_args()
vs_sample.sample_job(a.storage, os.environ["SM_MODEL_DIR"], os.path.dirname(os.environ["SM_CHANNEL_TRAIN"]),
                     int(a.trials), int(a.epochs), int(a.seed))
"""


def launch(arm: str, base: Path, storage: tuple[str, str], trials: int, epochs: int, seed: int):
    """Lay out the job folder of one arm; return the toolkit's ``train`` command, its environment,
    and the Optuna URL its study lands in. Both arms start as SageMaker starts them: ours in the
    toolkit's framework mode, the sample's script in its script mode (a subprocess)."""
    kind, where = storage
    if kind == "mariadb":
        url = f"mysql+mysqlconnector://root@127.0.0.1:3306/{where}"
    else:
        url = f"sqlite:///{base / 'output' / 'data' / 'optuna-study.db'}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SAGEMAKER_BASE_DIR": str(base)}
    env.pop("SAGEMAKER_TRAINING_MODULE", None)
    if arm == "ours":
        hps = {"n-trials": str(trials), "epochs": str(epochs), "seed": str(seed), "study-name": STUDY}
        hps["batch-size"] = str(BATCH)
        if kind == "mariadb":
            hps["storage"] = f"mysql://root@127.0.0.1:3306/{where}"
        env["SAGEMAKER_TRAINING_MODULE"] = "entrypoint.train:main"
        env["TRAINING_JOB_NAME"] = f"bench-seed{seed}"  # the sampler's seed derives from it
    else:
        code = base / "sample-code"
        code.mkdir(parents=True)
        (code / "sample_job.py").write_text(SAMPLE_SCRIPT.format(folder=str(Path(__file__).resolve().parent)))
        hps = {"storage": url, "trials": str(trials), "epochs": str(epochs), "seed": str(seed)}
        hps |= {"sagemaker_program": "sample_job.py", "sagemaker_submit_directory": str(code)}
        env["SM_STUDIO_LOCAL_MODE"] = "true"  # no DNS wait for the host algo-1 on this machine
    job_folder(base, hps)
    if arm == "ours":  # the image's `train` (entrypoint.cli)
        return [str(VENV_BIN / "train")], env, url
    # The toolkit's own `train` (ours replaces it on PATH): the sample's job runs in its script mode.
    return [str(VENV_BIN / "python"), "-m", "sagemaker_training.cli.train"], env, url


def measure(url: str, start: float, end: float) -> dict[str, float]:
    study = optuna.load_study(study_name=STUDY, storage=url)
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    complete = sorted(
        (t for t in trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.datetime_complete
    )
    final = max(t.value for t in complete)
    best, reached = -1.0, None
    for t in complete:
        best = max(best, t.value)
        if reached is None and best >= 0.95 * final:
            reached = t.datetime_complete.timestamp() - start
    epochs = sum(int(t.user_attrs.get("epochs_run", t.user_attrs.get("epoch", 0))) for t in trials)
    busy = sum(t.duration.total_seconds() for t in trials)
    return {
        "wall": end - start,
        "to95": reached,
        "epochs": epochs,
        "per_epoch": busy / epochs,
        "wrapup": end - max(t.datetime_complete.timestamp() for t in trials),
        "best": final,
    }


def run(arm: str, storage_kind: str, trials: int, epochs: int, seed: int) -> dict[str, float]:
    db = fresh_mariadb() if storage_kind == "mariadb" else None
    try:
        with tempfile.TemporaryDirectory(prefix=f"vs-{arm}-") as tmp:
            argv, env, url = launch(arm, Path(tmp), (storage_kind, db), trials, epochs, seed)
            cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.time()
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
            end = time.time()
            cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            if done.returncode != 0:
                raise RuntimeError(f"{arm} failed:\n{done.stderr[-3000:]}")
            cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
            return {**measure(url, start, end), "cpu": cpu}
    finally:
        if db is not None:
            drop_mariadb(db)


def run_sigterm(trials: int, epochs: int, seed: int) -> tuple[float, float]:
    """Ours on MariaDB, SIGTERM at the third trial's second epoch: (SIGTERM to exit, trial end to exit)."""
    db = fresh_mariadb()
    try:
        with tempfile.TemporaryDirectory(prefix="vs-term-") as tmp:
            argv, env, url = launch("ours", Path(tmp), ("mariadb", db), trials, epochs, seed)
            proc = subprocess.Popen(
                argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            for line in proc.stdout:
                if line.startswith("trial=2 epoch=2 ") or line.startswith("trial=3 epoch=1 "):
                    break
            sent = time.time()
            proc.send_signal(signal.SIGTERM)
            proc.stdout.read()
            code = proc.wait(timeout=120)
            end = time.time()
            if code != 0:
                raise RuntimeError(f"ours exited {code} after SIGTERM")
            study = optuna.load_study(study_name=STUDY, storage=url)
            last = max(t.datetime_complete.timestamp() for t in study.trials if t.datetime_complete)
            return end - sent, end - last
    finally:
        drop_mariadb(db)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--storages", nargs="+", default=["sqlite", "mariadb"], choices=["sqlite", "mariadb"])
    parser.add_argument("--sigterm", type=int, default=3, help="SIGTERM runs of ours on MariaDB")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    loads = []
    for seed in args.seeds:
        for kind in args.storages:
            for arm in ("sample", "ours"):
                loads.append(os.getloadavg()[0])
                r = run(arm, kind, args.trials, args.epochs, seed)
                results.setdefault((kind, arm), []).append(r)
                print(
                    f"seed={seed} {kind} {arm}: {json.dumps({k: round(v, 4) for k, v in r.items()})}",
                    flush=True,
                )
    print(f"\nload average (1 min) during the runs: {min(loads):.1f}-{max(loads):.1f}")
    print("storage | measure | ours | sample | ours / sample (median of per-seed ratios)")
    for kind in args.storages:
        ours, sample = results[(kind, "ours")], results[(kind, "sample")]
        for key in ("wall", "cpu", "to95", "epochs", "per_epoch", "wrapup", "best"):
            o, s = [r[key] for r in ours], [r[key] for r in sample]
            ratio = statistics.median(a / b for a, b in zip(o, s, strict=True))
            print(f"{kind} | {key} | {spread(o)} | {spread(s)} | {ratio:.2f}")
    if args.sigterm:
        runs = [run_sigterm(args.trials, args.epochs, seed) for seed in range(args.sigterm)]
        print(
            f"SIGTERM on MariaDB, {args.sigterm} runs: SIGTERM to exit {spread([a for a, _ in runs])} s, "
            f"interrupted trial's end to exit {spread([b for _, b in runs])} s (load {os.getloadavg()[0]:.1f})"
        )


if __name__ == "__main__":
    main()
