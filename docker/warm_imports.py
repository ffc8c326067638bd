"""Write bytecode for exactly the modules that `train` and `serve` import before their first
trial or request, by running both once on a tiny generated job (image build time only).

Bytecode for the whole venv costs about 110 MB and would push the image past its 600 MB
budget; without any, every container start compiles what it imports (about 2.5 s more).
This warm-up keeps the start fast for a fraction of the size. Run with bytecode writing on.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from entrypoint.constants import CHANNEL_TEST, CHANNEL_TRAIN


def write_tiny_job(base: Path) -> None:
    """/opt/ml's layout for a one-trial, one-epoch job on 64 random rows (devtools/localjob.py is
    not in the image)."""
    config = base / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({"n-trials": "1", "epochs": "1"}))
    host = {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}
    (config / "resourceconfig.json").write_text(json.dumps(host))
    channels = (CHANNEL_TRAIN, CHANNEL_TEST)
    mode = {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}
    (config / "inputdataconfig.json").write_text(json.dumps(dict.fromkeys(channels, mode)))
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 16), dtype=np.float32), rng.integers(0, 3, 64)
    for channel in channels:
        (base / "input" / "data" / channel).mkdir(parents=True)
        np.savez(base / "input" / "data" / channel / "data.npz", x=x, y=y)
    for sub in ("model", "output/data"):
        (base / sub).mkdir(parents=True)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SAGEMAKER_BASE_DIR"] = tmp  # read by the toolkit when it is first imported
        os.environ["SAGEMAKER_TRAINING_MODULE"] = "entrypoint.train:main"  # as the final image sets
        write_tiny_job(Path(tmp))
        from entrypoint import cli

        try:
            cli.main()  # the image's `train`, in process (the toolkit's would exit 0 on our failures)
        except SystemExit as exc:
            if exc.code:
                sys.exit(f"warm-up training failed ({exc.code})")
        # A job with a db-secret reads it with boto3 (hpo_study/database/credentials.py imports it only
        # then): its modules and the Secrets Manager client's, which the tiny job above skips.
        import boto3

        boto3.session.Session().client("secretsmanager", region_name="us-east-1")
        # A job on MySQL/Aurora or PostgreSQL loads its driver and SQLAlchemy's dialect, which
        # the tiny job above (embedded SQLite) does not: without their bytecode such a job
        # compiled them at every start (0.12-0.16 s for MySQL's, measured; more under load).
        # The authentication plugins are imported by name during the handshake.
        import mysql.connector
        import mysql.connector.plugins.caching_sha2_password
        import mysql.connector.plugins.mysql_native_password  # noqa: F401
        import sqlalchemy

        for url in (
            "mysql+mysqlconnector://warm@127.0.0.1/warm",
            "postgresql+psycopg2://warm@127.0.0.1/warm",
        ):
            sqlalchemy.create_engine(url).dispose()  # loads the dialect and its driver, connects to nothing
        import serving.cli  # noqa: F401  (the `serve` command and its server)
        import serving.server  # noqa: F401  (gunicorn)
        import serving.supervisor  # noqa: F401  (nginx's config and the supervisor)
        from serving.model import load_model

        load_model(Path(tmp) / "model")


if __name__ == "__main__":
    main()
