"""`make demo`'s last step: what the job left in its /opt/ml-like folder, in a few lines.

python -m devtools.demo build/demo

Reads only the job's outputs (trials.csv, model_dir) and the test channel, and classifies the
test digits with the saved model the way `serve` loads it.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
from pathlib import Path

import numpy as np

from core import artifact
from entrypoint.constants import CHANNEL_TEST
from entrypoint.trials import data
from hpo_study.constants import TRIALS_CSV_FILE


def summary(base: Path) -> list[str]:
    output = base / "output" / "data"
    with open(output / TRIALS_CSV_FILE, newline="") as f:
        trials = list(csv.DictReader(f))
    states = collections.Counter(t["state"] for t in trials)
    epochs = sum(int(t.get("user_attrs_epochs_run") or 0) for t in trials)
    record = artifact.read(base / "model")
    if record is None:
        raise SystemExit(f"{base / 'model'} holds no model: did the job complete a trial?")
    lines = [
        f"Study '{record.study_name}': {len(trials)} trials ("
        + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
        + f"), {epochs} epochs run in all",
        f"Model in {base / 'model'}: trial {record.trial_number} only, validation "
        f"{record.objective_metric} {record.value:.4f}, params {json.dumps(record.params)}",
    ]
    from serving.model import load_model, predict_probabilities  # the way `serve` loads it

    test = data.load_channel(CHANNEL_TEST, base / "input" / "data" / CHANNEL_TEST)
    predicted = predict_probabilities(load_model(base / "model"), test.x).argmax(axis=1)
    right = int((predicted == test.y).sum())
    lines.append(
        f"It classifies {right} of the {len(test.y)} test digits correctly ({right / len(test.y):.1%}); "
        f"first ten: predicted {' '.join(map(str, predicted[:10]))}, true {' '.join(map(str, test.y[:10]))}"
    )
    plots = sorted(p.name for p in (output / "plots").glob("*.png")) if (output / "plots").is_dir() else []
    lines.append(
        f"Report in {output}: {', '.join(sorted(p.name for p in output.iterdir()))}; plots: {', '.join(plots)}"
    )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("base_dir", type=Path)
    args = parser.parse_args(argv)
    np.set_printoptions(linewidth=120)
    print("\n".join(summary(args.base_dir)))


if __name__ == "__main__":
    main()
