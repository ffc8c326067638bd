"""Lay out a local folder the way SageMaker lays out /opt/ml, for demos, smoke tests and tests.

python -m devtools.localjob BASE_DIR --digits n-trials=10 epochs=5
SAGEMAKER_BASE_DIR=BASE_DIR train
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
from importlib import resources
from pathlib import Path

import numpy as np

Channels = dict[str, tuple[np.ndarray, np.ndarray]]


def train_env(base_dir: str | Path, **extra: str) -> dict[str, str]:
    """The environment the image gives the toolkit's `train`, pointed at a local job folder
    (none of this shell's SM_ or SAGEMAKER_ variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_"))}
    env.update(
        SAGEMAKER_BASE_DIR=str(base_dir),
        SAGEMAKER_TRAINING_MODULE="entrypoint.train:main",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def write_job_folder(base_dir: str | Path, hyperparameters: dict[str, str], channels: Channels) -> Path:
    """Write input/config/*.json and one data.npz per channel under base_dir."""
    base = Path(base_dir)
    config = base / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps({k: str(v) for k, v in hyperparameters.items()}))
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"})
    )
    (config / "inputdataconfig.json").write_text(
        json.dumps(
            {
                name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}
                for name in channels
            }
        )
    )
    for name, (x, y) in channels.items():
        folder = base / "input" / "data" / name
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "data.npz", x=x, y=y)
    for sub in ("model", "output/data"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return base


def digits_channels(test_fraction: float = 0.2, seed: int = 0) -> Channels:
    """The 8x8 handwritten digits bundled with scikit-learn (1,797 images), split train/test.

    Read straight from the package's data file, so no network is needed.
    """
    try:
        data_file = resources.files("sklearn.datasets") / "data" / "digits.csv.gz"
    except ModuleNotFoundError:
        raise SystemExit("The demo data needs scikit-learn: run `make install` first") from None
    with data_file.open("rb") as raw, gzip.open(raw, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    x, y = table[:, :-1] / 16.0, table[:, -1].astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return {"train": (x[train], y[train]), "test": (x[test], y[test])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("base_dir")
    parser.add_argument("--digits", action="store_true", help="use scikit-learn's 8x8 digits as train/test")
    parser.add_argument("hyperparameters", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_intermixed_args(argv)
    hps = dict(item.split("=", 1) for item in args.hyperparameters)
    channels = digits_channels() if args.digits else {}
    base = write_job_folder(args.base_dir, hps, channels)
    print(f"Job folder ready: SAGEMAKER_BASE_DIR={base} train")


if __name__ == "__main__":
    main()
