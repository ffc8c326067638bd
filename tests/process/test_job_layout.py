"""How the SageMaker SDKs lay out a job, run through the real `train` command: SDK v3's `code`
channel, several instances in one job sharing a model folder, and local runs that repeat exactly."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.support.jobs import VENV_BIN, train_env

EXAMPLE = Path(__file__).parents[2] / "examples" / "conv_digits"


def run_train(base: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "train")], env=train_env(base, **env), capture_output=True, text=True, timeout=600
    )


def add_channel_config(base: Path, name: str) -> None:
    path = base / "input" / "config" / "inputdataconfig.json"
    config = json.loads(path.read_text())
    config[name] = {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}
    path.write_text(json.dumps(config))


@pytest.mark.process
def test_model_module_from_the_code_channel_of_sdk_v3(job_dir):
    """SDK v3's SourceCode mounts source_dir as the `code` channel, not /opt/ml/code; that
    channel holds code, not data."""
    base = job_dir({"model-module": "conv_digits", "n-trials": "1", "epochs": "1", "seed": "1"})
    code = base / "input" / "data" / "code"
    code.mkdir()
    shutil.copy2(EXAMPLE / "conv_digits.py", code / "conv_digits.py")
    add_channel_config(base, "code")
    result = run_train(base, TRAINING_JOB_NAME="v3-code-channel")
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((base / "model" / "model.json").read_text())
    assert meta["model_module"] == "conv_digits"
    assert (base / "model" / "code" / "conv_digits.py").read_bytes() == (
        EXAMPLE / "conv_digits.py"
    ).read_bytes()
    assert "Data: 400 training and 200 test examples, 64 features" in result.stderr + result.stdout


@pytest.mark.process
def test_two_hosts_sharing_one_model_folder_leave_one_model(tmp_path):
    """instance_count=2 as SDK v2's local mode lays it out: every host's /opt/ml/model is the same
    folder. Hosts keep their models aside, so the one model there is the study's best, whole."""
    from tests.support.hosts import HostJob

    job = HostJob(tmp_path, 2, {"n-trials": "3", "epochs": "2", "seed": "1"}, name="two-hosts")
    shared = tmp_path / "shared-model"
    shared.mkdir()
    for base in job.bases.values():
        shutil.rmtree(base / "model")
        (base / "model").symlink_to(shared)
    try:
        job.start_all()
        codes = job.finish_all(600)
    finally:
        job.kill_all()
    assert set(codes.values()) == {0}, {h: p.stderr()[-2000:] for h, p in job.procs.items()}
    meta = json.loads((shared / "model.json").read_text())
    best = json.loads((job.bases[job.leader] / "output" / "data" / "best_trial.json").read_text())
    assert meta["trial_number"] == best["number"]
    assert sorted(p.name for p in shared.iterdir()) == sorted(["model.json", meta["weights_file"]])


def study_table(base: Path) -> list[dict]:
    import csv

    with open(base / "output" / "data" / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    clocks = ("datetime", "duration", "elapsed_time", "heartbeat")  # wall-clock columns
    return [{k: v for k, v in row.items() if not any(c in k for c in clocks)} for row in rows]


@pytest.mark.process
def test_a_local_run_with_a_seed_repeats_exactly(tmp_path, small_digits):
    """No TRAINING_JOB_NAME (a local run): same seed, same study, same model."""
    from devtools.localjob import write_job_folder

    hps = {"n-trials": "4", "epochs": "2", "seed": "1"}
    runs = []
    for name in ("first", "second"):
        base = write_job_folder(tmp_path / name, hps, small_digits)
        result = run_train(base)
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(base)
    first, second = (study_table(base) for base in runs)
    assert len(first) == 4 and first == second
    meta = [json.loads((base / "model" / "model.json").read_text()) for base in runs]
    assert meta[0]["job_name"] == "local" and meta[0] == meta[1]
    weights = [np.load(base / "model" / m["weights_file"]) for base, m in zip(runs, meta, strict=True)]
    assert sorted(weights[0].files) == sorted(weights[1].files)
    for name in weights[0].files:  # the arrays, not the zip files (they carry timestamps)
        np.testing.assert_array_equal(weights[0][name], weights[1][name])


SMPATHS_CHECK = """
import json, sys
from entrypoint.job import smpaths
import entrypoint.train, entrypoint.cli  # what the image's `train` imports before the job runs
before = {m for m in ("boto3", "botocore", "alembic", "matplotlib", "plotly") if m in sys.modules}
from sagemaker_training import environment
names = ["base_dir", "code_dir", "model_dir", "input_dir", "input_config_dir", "output_dir",
         "output_data_dir", "hyperparameters_file_dir", "input_data_config_file_dir",
         "resource_config_file_dir"]
print(json.dumps({
    "loaded": sorted(before),
    "differ": [n for n in names if getattr(smpaths, n) != getattr(environment, n)]
              + [c for c in ("train", "code") if smpaths.channel_path(c) != environment.channel_path(c)],
}))
"""


@pytest.mark.process
def test_smpaths_are_the_toolkits_paths_and_train_loads_no_boto3(tmp_path):
    """entrypoint/job/smpaths.py lays out the folders as the toolkit's environment module does (with
    SAGEMAKER_BASE_DIR, and without it or /opt/ml: a folder under ~/sagemaker_local); importing
    the job's modules loads neither boto3 (only a secret needs it) nor alembic nor the plots."""
    env = {**train_env(tmp_path), "HOME": str(tmp_path)}
    for base in (str(tmp_path / "base"), None):
        run_env = dict(env)
        if base is None:
            run_env.pop("SAGEMAKER_BASE_DIR", None)
            if Path("/opt/ml").exists():
                continue  # the toolkit would use /opt/ml: nothing else to compare
        else:
            run_env["SAGEMAKER_BASE_DIR"] = base
        out = subprocess.run(
            [str(VENV_BIN / "python"), "-c", SMPATHS_CHECK],
            env=run_env,
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        # Without a base folder, smpaths sets SAGEMAKER_BASE_DIR first, and the toolkit then takes it.
        assert result == {"loaded": [], "differ": []}, (base, result)
