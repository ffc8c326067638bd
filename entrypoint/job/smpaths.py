"""The training container's folders and config files, as the sagemaker-training toolkit's
``environment`` module lays them out (SageMaker's contract: /opt/ml, or SAGEMAKER_BASE_DIR
outside SageMaker), without importing that module: it imports boto3 at load (0.7 s of a job's
start under load), which a job needs only to read a Secrets Manager secret.

The names are the toolkit's own (``environment.model_dir`` and so on), so that train.py and
cli.py read ``smpaths`` where they read ``environment``. Written by hand: the toolkit has no
module with these paths that stays clear of boto3. tests/process/test_job_layout.py checks that every
name equals the toolkit's.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

BASE_PATH_ENV = "SAGEMAKER_BASE_DIR"  # sagemaker_training.params.BASE_PATH_ENV
SAGEMAKER_BASE_PATH = "/opt/ml"


def _base_dir() -> str:
    # The toolkit's rule: /opt/ml, or SAGEMAKER_BASE_DIR; with neither, it sets a fresh folder
    # under ~/sagemaker_local and exports it (so that child processes agree).
    if not (os.path.exists(SAGEMAKER_BASE_PATH) or BASE_PATH_ENV in os.environ):
        os.environ[BASE_PATH_ENV] = os.path.join(
            os.path.expanduser("~"), "sagemaker_local", "jobs", str(time.time()), "opt", "ml"
        )
    return os.environ.get(BASE_PATH_ENV, SAGEMAKER_BASE_PATH)


base_dir = _base_dir()
code_dir = os.path.join(base_dir, "code")
model_dir = os.path.join(base_dir, "model")
input_dir = os.path.join(base_dir, "input")
_input_data_dir = os.path.join(input_dir, "data")
input_config_dir = os.path.join(input_dir, "config")
output_dir = os.path.join(base_dir, "output")
output_data_dir = os.path.join(output_dir, "data")
hyperparameters_file_dir = os.path.join(input_config_dir, "hyperparameters.json")
input_data_config_file_dir = os.path.join(input_config_dir, "inputdataconfig.json")
resource_config_file_dir = os.path.join(input_config_dir, "resourceconfig.json")


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_resource_config() -> dict[str, Any]:
    """/opt/ml/input/config/resourceconfig.json (FileNotFoundError outside a job, as the toolkit)."""
    return _read_json(resource_config_file_dir)


def read_input_data_config() -> dict[str, Any]:
    """/opt/ml/input/config/inputdataconfig.json."""
    return _read_json(input_data_config_file_dir)


def channel_path(channel: str) -> str:
    """The folder of a data channel: /opt/ml/input/data/<channel>."""
    return os.path.join(_input_data_dir, channel)
