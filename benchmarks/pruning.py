"""Pruning: epochs spent and best accuracy of a 30-trial study, with and without a pruner.

    .venv/bin/python benchmarks/pruning.py [--trials 30] [--epochs 20] [--seeds 0 1 2]

Runs the real objective (the Chainer MLP, our pruning extension) on the bundled 8x8 digits,
on an in-memory study named after the seed, with the same sampler seed for each arm.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

from entrypoint.job.context import JobContext
from entrypoint.trials import data, search
from entrypoint.trials.objective import Objective
from hpo_study import settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # devtools/ ships in no package: the repository
from devtools.localjob import digits_channels  # noqa: E402


def run_arm(dataset: data.Dataset, pruner: str, trials: int, epochs: int, seed: int) -> dict[str, float]:
    s = settings.parse({"pruner": pruner, "epochs": str(epochs), "seed": str(seed)})
    study = optuna.create_study(
        # Named: Hyperband picks each trial's bracket from a hash of the study name, so an
        # unnamed (randomly named) study would change the hyperband arm on every run.
        study_name=f"pruning-bench-seed{seed}",
        direction="maximize",
        sampler=search.make_sampler(s, seed),
        pruner=search.make_pruner(s),
    )
    objective = Objective(JobContext(s, f"bench-{pruner}"), dataset)

    def run_trial(trial: optuna.Trial) -> float:
        objective.trained.clear()  # no best-model keeper here: do not hold old networks
        return objective(trial)

    t0 = time.perf_counter()
    study.optimize(run_trial, n_trials=trials)
    return {
        "epochs": sum(t.user_attrs.get("epochs_run", 0) for t in study.trials),
        "best": study.best_value,
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pruners", nargs="+", default=["median", "hyperband"])
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.disable(logging.INFO)

    with tempfile.TemporaryDirectory() as tmp:
        for name, (x, y) in digits_channels().items():
            (Path(tmp) / name).mkdir()
            np.savez(Path(tmp) / name / "d.npz", x=x, y=y)
        dataset = data.load({name: str(Path(tmp) / name) for name in ("train", "test")})

    rows = []
    for seed in args.seeds:
        with contextlib.redirect_stdout(io.StringIO()):  # the metric lines
            base = run_arm(dataset, "none", args.trials, args.epochs, seed)
            arms = {p: run_arm(dataset, p, args.trials, args.epochs, seed) for p in args.pruners}
        for pruner, arm in arms.items():
            saved = 1 - arm["epochs"] / base["epochs"]
            rows.append((pruner, seed, base, arm, saved))
            print(
                f"seed={seed} pruner={pruner}: epochs {arm['epochs']} vs {base['epochs']} "
                f"({saved:.0%} fewer), pruned {arm['pruned']}/{args.trials}, best accuracy "
                f"{arm['best']:.4f} vs {base['best']:.4f} ({(arm['best'] - base['best']) * 100:+.2f} points), "
                f"{arm['seconds']:.0f} s vs {base['seconds']:.0f} s"
            )
    for pruner in args.pruners:
        mine = [r for r in rows if r[0] == pruner]
        print(
            f"{pruner}: median {statistics.median(r[4] for r in mine):.0%} fewer epochs, "
            f"median accuracy change {statistics.median((r[3]['best'] - r[2]['best']) * 100 for r in mine):+.2f} points "
            f"over seeds {args.seeds}"
        )


if __name__ == "__main__":
    main()
