"""The SageMaker Python SDK, v2 and v3, driving the image in local mode, as users call it.

Each SDK runs in its own venv (build/sdk-v2, build/sdk-v3: `make sdk`, which `make test` runs)
from a script in tests/support/sdk_drivers/. Local mode drives docker-compose (Debian's 1.29, installed by
docker/setup-engine.sh) against a Docker API socket: with podman, `podman system service` on a
socket of this test's own. docker-compose 1.x exits 0 when the container failed, so every job's
real outcome is checked here: the container's exit code and the absence of a failure file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support import services
from tests.support.sdk import DRIVERS, ROOT, log_tail, sdk_python

EXAMPLE = ROOT / "examples" / "conv_digits"
SDK_TIMEOUT = 900
COMPOSE_WORKDIR_LABEL = "com.docker.compose.project.working_dir"


@pytest.fixture(scope="session")
def docker_host(engine, tmp_path_factory) -> Iterator[str]:
    """A Docker API socket for docker-compose and the docker CLI that the SDK calls."""
    if shutil.which("docker-compose") is None:
        services.unavailable("docker-compose is not installed: run `make engine`")
    if shutil.which("docker") is None:  # local mode calls `docker compose version`, `docker images`
        services.unavailable("the SDK's local mode needs the docker CLI (no daemon: a socket is enough)")
    if not engine.is_podman:
        yield os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        return
    url = f"unix://{tmp_path_factory.mktemp('podman') / 'podman.sock'}"
    service = subprocess.Popen(
        [engine.command, "system", "service", "--time=0", url],
        env=engine.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        env = {**os.environ, "DOCKER_HOST": url}
        services.wait_for(
            lambda: (
                subprocess.run(["docker", "version"], env=env, capture_output=True, timeout=10).returncode
                == 0
            ),
            60,
            "podman's Docker API socket",
        )
        yield url
    finally:
        service.terminate()
        service.wait(timeout=30)


@pytest.fixture(scope="session")
def sdk_env(sdk_config_env, docker_host) -> dict[str, str]:
    """... and the Docker API socket for local mode."""
    return {**sdk_config_env, "DOCKER_HOST": docker_host}


@pytest.fixture(scope="module")
def channels(small_digits, tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("channels")
    paths = {}
    for name, (x, y) in small_digits.items():
        (folder / name).mkdir()
        np.savez(folder / name / "data.npz", x=x, y=y)
        paths[name] = str(folder / name)
    return paths


def run_sdk(version: str, args: dict, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, dict]:
    result = subprocess.run(
        [str(sdk_python(version)), str(DRIVERS / f"{version}_local.py"), json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=SDK_TIMEOUT,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, f"SDK {version} failed:\n{log_tail(result)}"
    return result, json.loads(lines[-1].removeprefix("RESULT "))


def containers_under(engine, root: Path) -> list[dict]:
    """`inspect` of every container docker-compose started for a compose file under root."""
    ids = engine("ps", "-aq").stdout.split()
    if not ids:
        return []
    found = json.loads(engine("inspect", *ids).stdout)
    return [
        c
        for c in found
        if (c["Config"].get("Labels") or {}).get(COMPOSE_WORKDIR_LABEL, "").startswith(str(root))
    ]


@contextlib.contextmanager
def compose_root(engine, tmp_path: Path) -> Iterator[Path]:
    """A folder for the SDK's compose files; its containers are removed afterwards."""
    root = tmp_path / f"sdk-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    try:
        yield root
    finally:
        for container in containers_under(engine, root):
            engine("rm", "-f", container["Id"], check=False)


def assert_training_succeeded(engine, root: Path, output_tar: Path | None = None) -> list[dict]:
    """The real outcome: every training container exited 0 and wrote no failure file."""
    trained = [c for c in containers_under(engine, root) if "serve" not in (c["Config"].get("Cmd") or [])]
    assert trained, f"no training container found under {root}"
    for container in trained:
        assert container["State"]["ExitCode"] == 0, (container["Name"], container["State"])
    if output_tar is not None:
        with tarfile.open(output_tar) as tar:
            names = tar.getnames()
        assert "failure" not in names, names
    return trained


def model_from_tar(path: Path, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path) as tar:
        tar.extractall(into, filter="data")
    return into


def local_path(uri: str) -> Path:
    parsed = urllib.parse.urlparse(uri)
    assert parsed.scheme == "file", uri
    return Path(parsed.path)


def expected_probabilities(model_dir: Path, x: np.ndarray) -> np.ndarray:
    """What the trained model predicts, computed in this process by the serving code."""
    from serving.model import load_model, predict_probabilities

    return predict_probabilities(load_model(model_dir), x)


def sdk_v2_job(sdk_env, engine, channels, tmp_path, x_test, **extra) -> tuple[dict, Path, dict]:
    output = tmp_path / "output"
    output.mkdir()
    np.save(tmp_path / "x.npy", x_test, allow_pickle=False)
    with compose_root(engine, tmp_path) as root:
        args = {
            "image": extra.pop("image"),
            "channels": channels,
            "output": f"file://{output}",
            "root": str(root),
            "port": services.free_port(),
            "predict": str(tmp_path / "x.npy"),
            **extra,
        }
        result, answer = run_sdk("v2", args, sdk_env)
        model_tar = local_path(answer["model_data"])
        assert_training_succeeded(engine, root, model_tar.parent / "output.tar.gz")
    meta = json.loads((model_from_tar(model_tar, tmp_path / "model") / "model.json").read_text())
    return answer, tmp_path / "model", meta | {"log": result.stdout + result.stderr}


# --- SDK v2: Estimator in local mode --------------------------------------------------------


# Batch transform with AssembleWith=Line, both split types, CSV and JSON lines in and out.
TRANSFORMS = [
    ("text/csv", "text/csv", "Line", "SingleRecord"),
    ("text/csv", "text/csv", None, "MultiRecord"),
    ("application/jsonlines", "application/jsonlines", "Line", "MultiRecord"),
    ("application/jsonlines", "application/jsonlines", None, "MultiRecord"),
]


def transform_jobs(x: np.ndarray, folder: Path) -> list[dict]:
    """One input folder per job: the rows of x as CSV or JSON lines, one record per line."""
    jobs = []
    for number, (content_type, accept, split_type, strategy) in enumerate(TRANSFORMS):
        job_in, job_out = folder / f"in-{number}", folder / f"out-{number}"
        job_in.mkdir(parents=True)
        job_out.mkdir()
        if content_type == "text/csv":
            text = "\n".join(",".join(f"{v:.6g}" for v in row) for row in x) + "\n"
        else:
            text = "\n".join(json.dumps([float(v) for v in row]) for row in x) + "\n"
        (job_in / "records.txt").write_text(text)
        jobs.append(
            {
                "input": str(job_in),
                "output": str(job_out),
                "content_type": content_type,
                "accept": accept,
                "split_type": split_type,
                "strategy": strategy,
            }
        )
    return jobs


def assembled_labels(text: str, accept: str) -> list[int]:
    """The labels of an assembled output file, which must hold one line per record and no blank line."""
    assert text.endswith("\n") and not text.endswith("\n\n"), repr(text[-40:])
    lines = text[:-1].split("\n")
    assert all(line.strip() for line in lines), f"blank line in the assembled output: {text!r}"
    if accept == "text/csv":
        return [int(line.split(",", 1)[0]) for line in lines]
    return [json.loads(line)["label"] for line in lines]


@pytest.mark.container
def test_sdk_v2_builtin_model_fit_deploy_predict(engine, image, sdk_env, channels, digits, tmp_path):
    x_test = digits["test"][0][:16]
    jobs = transform_jobs(x_test, tmp_path / "transform")
    answer, model_dir, meta = sdk_v2_job(
        sdk_env,
        engine,
        channels,
        tmp_path,
        x_test,
        image=image,
        job="sdk-v2-builtin",
        hyperparameters={"study-name": "sdk-v2", "n-trials": 2, "epochs": 3, "seed": 1},
        transforms=jobs,
    )
    assert meta["job_name"] == "sdk-v2-builtin" and meta["study_name"] == "sdk-v2"
    assert meta.get("model_module") is None
    assert "best_trial=" in meta["log"]
    predictions = np.asarray(answer["predictions"])
    expected = expected_probabilities(model_dir, x_test)
    np.testing.assert_allclose(predictions, expected, rtol=1e-5, atol=1e-6)
    assert len(answer["transforms"]) == len(TRANSFORMS)
    for job, outputs in zip(jobs, answer["transforms"], strict=True):
        assert list(outputs) == ["records.txt.out"], (job, outputs)
        labels = assembled_labels(outputs["records.txt.out"], job["accept"])
        assert labels == expected.argmax(axis=1).tolist(), (job, labels)


@pytest.mark.container
def test_sdk_v2_bring_your_own_model_fit_deploy_predict(engine, image, sdk_env, channels, digits, tmp_path):
    """source_dir + entry_point: SDK v2 JSON-encodes every hyperparameter (script mode)."""
    x_test = digits["test"][0][:16]
    answer, model_dir, meta = sdk_v2_job(
        sdk_env,
        engine,
        channels,
        tmp_path,
        x_test,
        image=image,
        job="sdk-v2-byo",
        source_dir=str(EXAMPLE),
        entry_point="conv_digits.py",
        hyperparameters={
            "model-module": "conv_digits",
            "study-name": "sdk-v2-byo",
            "n-trials": 1,
            "epochs": 2,
        },
    )
    assert meta["model_module"] == "conv_digits" and meta["study_name"] == "sdk-v2-byo"
    assert (model_dir / "code" / "conv_digits.py").is_file()
    predictions = np.asarray(answer["predictions"])
    np.testing.assert_allclose(predictions, expected_probabilities(model_dir, x_test), rtol=1e-5, atol=1e-6)


# --- SDK v3: ModelTrainer in local container mode (training only) --------------------------


def sdk_v3_job(sdk_env, engine, channels, tmp_path, **args) -> tuple[Path, dict]:
    with compose_root(engine, tmp_path) as root:
        result, _ = run_sdk("v3", {"channels": channels, "root": str(root), **args}, sdk_env)
        assert_training_succeeded(engine, root)
        archives = list(root.rglob("model.tar.gz"))
        assert len(archives) == 1, (archives, log_tail(result))
        outputs = list(root.rglob("output.tar.gz"))
        if outputs:
            with tarfile.open(outputs[0]) as tar:
                assert "failure" not in tar.getnames()
        model_dir = model_from_tar(archives[0], tmp_path / "model")
    return model_dir, json.loads((model_dir / "model.json").read_text())


@pytest.mark.container
def test_sdk_v3_model_trainer_builtin_model(engine, image, sdk_env, channels, tmp_path):
    """No command: the image's CMD must train."""
    model_dir, meta = sdk_v3_job(
        sdk_env,
        engine,
        channels,
        tmp_path,
        image=image,
        job="sdk-v3-builtin",
        hyperparameters={"study-name": "sdk-v3", "n-trials": 2, "epochs": 2, "seed": 1},
    )
    assert meta["study_name"] == "sdk-v3" and meta.get("model_module") is None
    assert (model_dir / meta["weights_file"]).is_file()


@pytest.mark.container
def test_sdk_v3_model_trainer_bring_your_own_model(engine, image, sdk_env, channels, tmp_path):
    """SourceCode delivers source_dir as the `code` channel and runs `train` there."""
    model_dir, meta = sdk_v3_job(
        sdk_env,
        engine,
        channels,
        tmp_path,
        image=image,
        job="sdk-v3-byo",
        source_dir=str(EXAMPLE),
        hyperparameters={
            "model-module": "conv_digits",
            "study-name": "sdk-v3-byo",
            "n-trials": 1,
            "epochs": 2,
        },
    )
    assert meta["model_module"] == "conv_digits"
    assert (model_dir / "code" / "conv_digits.py").is_file()


@pytest.mark.container
def test_a_failed_job_is_seen_although_docker_compose_exits_0(engine, image, sdk_env, channels, tmp_path):
    """docker-compose 1.x returns 0 when the container failed: the SDK may report success, so
    the outcome is read from the container and the failure file."""
    output = tmp_path / "output"
    output.mkdir()
    with compose_root(engine, tmp_path) as root:
        args = {
            "image": image,
            "channels": channels,
            "output": f"file://{output}",
            "root": str(root),
            "port": services.free_port(),
            "job": "sdk-v2-bad",
            "hyperparameters": {"n-trials": "many"},
        }
        subprocess.run(
            [str(sdk_python("v2")), str(DRIVERS / "v2_local.py"), json.dumps(args)],
            env=sdk_env,
            capture_output=True,
            text=True,
            timeout=SDK_TIMEOUT,
        )
        trained = containers_under(engine, root)
        assert [c["State"]["ExitCode"] for c in trained] == [1]
    with tarfile.open(next(output.rglob("output.tar.gz"))) as tar:
        failure = tar.extractfile("failure").read().decode()
    assert failure.startswith("Invalid hyperparameters: hyperparameter 'n-trials' must be an integer")
    assert io.StringIO(failure).read().count("\n") == 0


def assert_one_study_one_model(model_tar: Path, output_tar: Path, hosts: int) -> dict:
    """SageMaker's (and local mode's) aggregation of every host's folders: one model, the study's
    best; the report once; a folder of its own per host; no failure."""
    with tarfile.open(model_tar) as tar:
        model_names = tar.getnames()
        meta = json.loads(tar.extractfile("model.json").read())
    with tarfile.open(output_tar) as tar:
        output_names = tar.getnames()
        best = json.loads(tar.extractfile("data/best_trial.json").read())
        summaries = [json.loads(tar.extractfile(n).read()) for n in output_names if n.endswith("/host.json")]
    assert "failure" not in output_names, output_names
    assert model_names.count("model.json") == 1, model_names
    assert meta["trial_number"] == best["number"] and meta["value"] == best["value"]
    assert output_names.count("data/trials.csv") == 1 and output_names.count("data/optuna-study.db") == 1
    assert len(summaries) == hosts and sum(s["keeps_job_model"] for s in summaries) == 1
    assert {s["leader"] for s in summaries} == {min(s["host"] for s in summaries)}
    return meta


@pytest.mark.container
def test_sdk_v2_two_instances_share_one_study_and_leave_one_model(engine, image, sdk_env, channels, tmp_path):
    """instance_count=2: local mode starts a container per host on one network (their names
    resolve through the engine's DNS) and, like SageMaker, packs both hosts' folders into one
    model.tar.gz and one output.tar.gz."""
    output = tmp_path / "output"
    output.mkdir()
    with compose_root(engine, tmp_path) as root:
        args = {
            "image": image,
            "channels": channels,
            "output": f"file://{output}",
            "root": str(root),
            "port": services.free_port(),
            "job": "sdk-v2-two-hosts",
            "instance_count": 2,
            "hyperparameters": {"n-trials": 2, "epochs": 2, "seed": 1, "db-retry-timeout": 120},
        }
        result, answer = run_sdk("v2", args, sdk_env)
        trained = assert_training_succeeded(engine, root)
        assert len(trained) == 2, log_tail(result)
    model_tar = local_path(answer["model_data"])
    meta = assert_one_study_one_model(model_tar, model_tar.parent / "output.tar.gz", hosts=2)
    assert meta["job_name"] == "sdk-v2-two-hosts"
    assert "Serving study" in result.stdout + result.stderr, log_tail(result)


@pytest.mark.container
def test_sdk_v3_two_instances_share_one_study_and_leave_one_model(engine, image, sdk_env, channels, tmp_path):
    with compose_root(engine, tmp_path) as root:
        result, _ = run_sdk(
            "v3",
            {
                "image": image,
                "channels": channels,
                "root": str(root),
                "job": "sdk-v3-two-hosts",
                "instance_count": 2,
                "hyperparameters": {"n-trials": "2", "epochs": "2", "seed": "1", "db-retry-timeout": "120"},
            },
            sdk_env,
        )
        trained = assert_training_succeeded(engine, root)
        assert len(trained) == 2, log_tail(result)
        archives, outputs = list(root.rglob("model.tar.gz")), list(root.rglob("output.tar.gz"))
        assert len(archives) == 1 and len(outputs) == 1, (archives, outputs, log_tail(result))
        assert_one_study_one_model(archives[0], outputs[0], hosts=2)
