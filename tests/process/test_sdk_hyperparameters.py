"""Every hyperparameter key as the SageMaker Python SDK v2 writes it (its own venv, `make sdk`)
is read by the job as meant."""

from __future__ import annotations

import json
import subprocess

import pytest

from entrypoint.job.hyperparameters import load
from tests.support.sdk import ROOT, log_tail, sdk_python

EXAMPLE = ROOT / "examples" / "conv_digits"


# --- hyperparameters.json exactly as SDK v2 writes it ---------------------------------------

EVERY_KEY = {
    "study-name": "digits-v1",
    "n-trials": 20,
    "timeout": 3600.5,
    "objective-metric": "loss",
    "direction": "minimize",
    "sampler": "random",
    "seed": 1,
    "pruner": "hyperband",
    "epochs": 5,
    "batch-size": 64,
    "db-secret": "hpo/optuna-db",
    "host": "db.example",
    "db-port": 3306,
    "db-name": "optuna",
    "db-engine": "mysql",
    "db-ssl-ca": "/opt/ml/input/data/ca/ca.pem",
    "region-name": "eu-west-1",
    "max-trials": 100,
    "heartbeat-interval": 30,
    "heartbeat-grace-period": 90,
    "db-retry-timeout": 120.5,
    "trial-timeout": 600,
    "max-consecutive-failures": 3,
    "model-module": "conv_digits",
    "install-requirements": False,
}
STORAGE_KEY = {"storage": "postgresql+psycopg2://optuna@db.example:5432/optuna"}  # not with host


def as_strings(keys: dict) -> dict:
    """The README's style: every value a string ("20"), which script mode sends as "\\"20\\""."""
    return {k: json.dumps(v) if isinstance(v, bool) else str(v) for k, v in keys.items()}


HOST_KEYS = EVERY_KEY
STORAGE_KEYS = {**{k: v for k, v in EVERY_KEY.items() if k != "host"}, **STORAGE_KEY}


VARIANTS = {
    "host-typed": HOST_KEYS,
    "host-strings": as_strings(HOST_KEYS),
    "storage-typed": STORAGE_KEYS,
    "storage-strings": as_strings(STORAGE_KEYS),
}
WRITE_HYPERPARAMETERS = """
import json, sys
from sagemaker.estimator import Estimator
from sagemaker.local import LocalSession, image

class Written(Exception):
    pass

def written(self, host, hyperparameters, input_data_config):
    real(self, host, hyperparameters, input_data_config)
    with open(f"{self.container_root}/{host}/input/config/hyperparameters.json") as f:
        raise Written(f.read())

real = image._SageMakerContainer.write_config_files
image._SageMakerContainer.write_config_files = written
args = json.loads(sys.argv[1])
session = LocalSession()
session.config = {"local": {"local_code": True, "container_root": args["root"]}}
for name, keys in args["variants"].items():
    for source in (None, args["source_dir"]):
        try:
            Estimator(
                image_uri="sagemaker-optuna-chainer:any", role="arn:aws:iam::123456789012:role/r",
                instance_count=1, instance_type="local", output_path=f"file://{args['root']}/out",
                hyperparameters=keys, sagemaker_session=session,
                source_dir=source, entry_point="conv_digits.py" if source else None,
            ).fit({"train": f"file://{args['root']}"}, job_name="hps")
        except Written as exc:
            print("RESULT", json.dumps([name, bool(source), json.loads(str(exc))]), flush=True)
"""


@pytest.fixture(scope="module")
def sdk_v2_hyperparameters(sdk_config_env, tmp_path_factory) -> dict[tuple[str, bool], dict]:
    """hyperparameters.json written by SDK v2's own local mode (stopped before docker-compose),
    for each variant with and without source_dir."""
    args = {"variants": VARIANTS, "source_dir": str(EXAMPLE), "root": str(tmp_path_factory.mktemp("hps"))}
    result = subprocess.run(
        [str(sdk_python("v2")), "-c", WRITE_HYPERPARAMETERS, json.dumps(args)],
        env=sdk_config_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    found = {}
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            name, with_source_dir, written = json.loads(line.removeprefix("RESULT "))
            found[name, with_source_dir] = written
    assert len(found) == 2 * len(VARIANTS), log_tail(result)
    return found


@pytest.mark.process
@pytest.mark.parametrize("with_source_dir", [False, True], ids=["plain", "source_dir"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_key_as_sdk_v2_writes_it(sdk_v2_hyperparameters, tmp_path, variant, with_source_dir):
    keys = VARIANTS[variant]
    written = sdk_v2_hyperparameters[variant, with_source_dir]
    for key, value in keys.items():  # script mode: every value JSON-encoded, e.g. "\\"20\\""
        assert written[key] == (json.dumps(value) if with_source_dir else str(value)), key
    path = tmp_path / "hyperparameters.json"
    path.write_text(json.dumps(written))
    settings = load(path)
    expected = {k.replace("-", "_"): v for k, v in EVERY_KEY.items() if k in keys}
    assert {k: getattr(settings, k) for k in expected} == expected
    if "storage" in keys:
        assert settings.storage == STORAGE_KEY["storage"] and settings.host is None
