"""The image, built from this repository and run exactly as SageMaker runs it.

Tests marked ``container`` share one image that a session fixture builds with ``make image``
(wheelhouse and layer cache under build/, so a rebuild takes seconds), then run
``ENGINE run ... IMAGE train|serve`` with a mounted /opt/ml. CI installs the engine and the local
base image first (``make engine``); without a working engine they skip, and under CI=true fail.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import chainer
import numpy as np
import optuna
import pytest
import sqlalchemy
import yaml

from core.network import build_network
from devtools.localjob import write_job_folder
from hpo_study.constants import EMBEDDED_STORAGE_FILE
from tests.support import services
from tests.support.engine import BUILD_TIMEOUT, ROOT, Engine, tail

MAX_IMAGE_BYTES = 600 * 10**6  # the limit: 600 MB
SERVE_READY_TIMEOUT = 120
SIGTERM_GRACE = 90  # SageMaker sends SIGKILL 120 s after SIGTERM
BUILDSPEC_PHASES = ("install", "pre_build", "build", "post_build")


def model_files(base: Path) -> list[str]:
    return sorted(p.name for p in (base / "model").iterdir())


def assert_one_model(base: Path) -> dict:
    meta = json.loads((base / "model" / "model.json").read_text())
    assert model_files(base) == sorted(["model.json", meta["weights_file"]])
    return meta


@pytest.fixture(scope="module")
def embedded_job(
    engine: Engine, image: str, digits, tmp_path_factory
) -> tuple[Path, subprocess.CompletedProcess]:
    """A 3-trial job on the embedded storage, with no network at all (network isolation)."""
    hps = {"study-name": "smoke", "n-trials": "3", "epochs": "8", "seed": "7"}
    base = write_job_folder(tmp_path_factory.mktemp("embedded") / "opt_ml", hps, digits)
    result = engine.run_container(
        "--network=none", "-e", "TRAINING_JOB_NAME=smoke-embedded-1", "-v", f"{base}:/opt/ml", image, "train"
    )
    return base, result


# --- the image -------------------------------------------------------------------------------


@pytest.mark.container
def test_image_is_configured_for_sagemaker(engine: Engine, image: str):
    info = json.loads(engine("image", "inspect", image).stdout)[0]
    config = info["Config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert config["Labels"]["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    assert env["SAGEMAKER_TRAINING_MODULE"] == "entrypoint.train:main"
    assert env["PYTHONUNBUFFERED"] == "1" and env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert not config.get("Entrypoint"), "SageMaker's train/serve must be the command itself"
    assert config["Cmd"] == ["train"], "SDK v3's ModelTrainer starts the container without a command"
    size = int(info["Size"])
    print(f"image size: {size / 1e6:.0f} MB")
    assert size <= MAX_IMAGE_BYTES, f"{size / 1e6:.0f} MB"
    checks = (
        "command -v train; command -v serve; "
        "for tool in gcc cc make; do command -v $tool && echo has-$tool; done; "
        "ls -A /var/lib/apt/lists; ls -d /root/.cache/pip 2>/dev/null; "
        "python -c 'import entrypoint.train, sagemaker_training, chainer, optuna'; "
        # The `plots` extra is for `sagemaker-optuna report` on the user's machine, not the image.
        "python -c 'import matplotlib' 2>/dev/null && echo has-matplotlib; "
        "python -c 'import plotly' 2>/dev/null && echo has-plotly; true"
    )
    result = engine.run_container("--network=none", image, "sh", "-c", checks, timeout=120)
    assert result.returncode == 0, tail(result)
    assert result.stdout.split() == ["/opt/venv/bin/train", "/opt/venv/bin/serve"], tail(result)


@pytest.mark.container
def test_train_on_the_embedded_storage_without_network(embedded_job):
    base, result = embedded_job
    assert result.returncode == 0, tail(result)
    meta = assert_one_model(base)
    storage = f"sqlite:///{base / 'output' / 'data' / EMBEDDED_STORAGE_FILE}"
    study = optuna.load_study(study_name="smoke", storage=storage)
    assert len(study.trials) == 3
    assert {t.user_attrs["job_name"] for t in study.trials} == {"smoke-embedded-1"}
    assert meta["value"] == max(t.value for t in study.trials if t.value is not None)
    assert not (base / "output" / "failure").exists()
    assert "best_trial=" in result.stdout


@pytest.mark.container
def test_train_on_mariadb_with_the_password_from_secrets_manager(
    engine: Engine, image: str, digits, mysql_db, moto_endpoint, tmp_path
):
    secrets = boto3.client(
        "secretsmanager",
        endpoint_url=moto_endpoint,
        region_name=services.REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    secret = f"smoke/optuna/{uuid.uuid4().hex[:8]}"
    secrets.create_secret(
        Name=secret, SecretString=json.dumps({"username": mysql_db.user, "password": mysql_db.password})
    )
    hps = {
        "study-name": "smoke-mariadb",
        "n-trials": "2",
        "epochs": "2",
        "seed": "3",
        "host": mysql_db.host,
        "db-port": str(mysql_db.port),
        "db-name": mysql_db.name,
        "db-secret": secret,
        "region-name": services.REGION,
    }
    base = write_job_folder(tmp_path / "opt_ml", hps, digits)
    aws_env = [
        arg for key, value in services.aws_env(moto_endpoint).items() for arg in ("-e", f"{key}={value}")
    ]
    result = engine.run_container(
        "--network=host",
        *aws_env,
        "-e",
        "TRAINING_JOB_NAME=smoke-mariadb-1",
        "-v",
        f"{base}:/opt/ml",
        image,
        "train",
    )
    assert result.returncode == 0, tail(result)
    assert_one_model(base)
    assert not (base / "output" / "failure").exists()
    assert not (base / "output" / "data" / EMBEDDED_STORAGE_FILE).exists()
    assert mysql_db.password not in result.stdout + result.stderr
    url = sqlalchemy.engine.URL.create(
        "mysql+mysqlconnector",
        username=mysql_db.user,
        password=mysql_db.password,
        host=mysql_db.host,
        port=mysql_db.port,
        database=mysql_db.name,
    )
    storage = optuna.storages.RDBStorage(url.render_as_string(hide_password=False))
    try:
        trials = optuna.load_study(study_name="smoke-mariadb", storage=storage).trials
        assert len(trials) == 2
        assert {t.user_attrs["job_name"] for t in trials} == {"smoke-mariadb-1"}
    finally:
        storage.engine.dispose()


@pytest.mark.container
def test_a_bad_hyperparameter_fails_with_a_clear_failure_file(
    engine: Engine, image: str, small_digits, tmp_path
):
    base = write_job_folder(tmp_path / "opt_ml", {"n-trials": "many"}, small_digits)
    result = engine.run_container("--network=none", "-v", f"{base}:/opt/ml", image, "train", timeout=120)
    assert result.returncode != 0
    failure = (base / "output" / "failure").read_text()
    assert "'n-trials' must be an integer" in failure
    assert "Traceback" not in failure
    assert model_files(base) == []


@pytest.mark.container
def test_the_python_process_is_pid_1_and_gets_sigterm(engine: Engine, image: str, small_digits, tmp_path):
    """No shell between SageMaker and Python: the SIGTERM of StopTrainingJob reaches the job,
    which stops well before SageMaker's SIGKILL (120 s later)."""
    base = write_job_folder(tmp_path / "opt_ml", {"n-trials": "1000", "epochs": "50"}, small_digits)
    name = f"pytest-{uuid.uuid4().hex[:10]}"
    engine("run", "-d", "--name", name, "--network=none", "-v", f"{base}:/opt/ml", image, "train")
    try:
        cmdline = engine("exec", name, "cat", "/proc/1/cmdline").stdout.split("\0")
        assert Path(cmdline[0]).name.startswith("python") and cmdline[1] == "/opt/venv/bin/train", cmdline
        services.wait_for(lambda: "trial=0 epoch=1 " in engine("logs", name).stdout, 120, "the first epoch")
        started = time.monotonic()
        engine("kill", "--signal", "TERM", name)
        exit_code = int(engine("wait", name, timeout=SIGTERM_GRACE).stdout.strip())
        assert exit_code != 137, "killed, not stopped: SIGTERM did not reach the Python process"
        print(f"stopped {time.monotonic() - started:.1f} s after SIGTERM, exit code {exit_code}")
    finally:
        engine.remove(name)


def host_predictions(model_dir: Path, x: np.ndarray) -> list[int]:
    """What the saved model predicts, computed here with the one shared network definition."""
    meta = json.loads((model_dir / "model.json").read_text())
    net = build_network(meta["params"], meta["n_features"], meta["n_classes"])
    chainer.serializers.load_npz(str(model_dir / meta["weights_file"]), net)
    with chainer.using_config("train", False), chainer.no_backprop_mode():
        return net(x.astype(np.float32)).array.argmax(axis=1).tolist()


def labels_of(body: dict) -> list[int]:
    return [p if isinstance(p, int) else int(p["label"]) for p in body["predictions"]]


def http(url: str, body: bytes | None = None, content_type: str = "application/json", timeout: float = 10):
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": content_type, "Accept": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.read()


@pytest.mark.container
def test_serve_answers_ping_and_classifies_digits(engine: Engine, image: str, embedded_job, digits):
    base, trained = embedded_job
    assert trained.returncode == 0, tail(trained)
    port = services.free_port()
    name = f"pytest-{uuid.uuid4().hex[:10]}"
    engine(
        "run", "-d", "--name", name, "--network=host", "-e", f"SAGEMAKER_BIND_TO_PORT={port}",
        "-v", f"{base / 'model'}:/opt/ml/model", image, "serve",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVE_READY_TIMEOUT
        while True:
            with contextlib.suppress(OSError):
                if http(f"{url}/ping", timeout=2)[0] == 200:
                    break
            running = engine("inspect", "--format", "{{.State.Running}}", name, check=False).stdout.strip()
            if running != "true" or time.monotonic() > deadline:
                logs = engine("logs", name, check=False)
                pytest.fail(f"serve did not answer /ping (running={running}):\n{tail(logs)}")
            time.sleep(0.5)  # polling pace
        x, y = digits["test"]
        x, y = x[:20], y[:20]
        status, body = http(f"{url}/invocations", json.dumps({"instances": x.tolist()}).encode(), timeout=60)
        assert status == 200
        labels = labels_of(json.loads(body))
        assert labels == host_predictions(base / "model", x)
        assert np.mean(np.array(labels) == y) >= 0.5, (labels, y.tolist())
    finally:
        engine.remove(name)


# --- the buildspec, phase by phase, against a local registry ----------------------------------


@pytest.fixture
def registry(tmp_path) -> Iterator[str]:
    """Debian's docker-registry on a free port of 127.0.0.1; yields host:port."""
    binary = shutil.which("docker-registry")
    if binary is None:
        services.unavailable("docker-registry is not installed: run `make engine`")
    port = services.free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "registry")}},
                "http": {"addr": f"127.0.0.1:{port}"},
            }
        )
    )
    with open(tmp_path / "registry.log", "wb") as log:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        services.wait_for(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).status == 200,
            30,
            "registry",
        )
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def buildspec_script(spec: dict) -> str:
    """The phases' commands in order, in one bash process, stopping at the first failure."""
    lines = [f"cd {shlex.quote(str(ROOT))}"]
    for phase in BUILDSPEC_PHASES:
        for command in spec["phases"][phase].get("commands", []):
            lines.append(f"echo {shlex.quote(f'[buildspec {phase}] {command.strip()}')}")
            lines.append(command.rstrip("\n"))
            lines.append(f'rc=$?; [ $rc -eq 0 ] || {{ echo "[buildspec {phase}] exit $rc" >&2; exit $rc; }}')
    return "\n".join(lines) + "\n"


@pytest.mark.container
def test_buildspec_pushes_an_image_that_pulls_back_and_trains(
    engine: Engine, image: str, registry: str, moto_endpoint, small_digits, tmp_path
):
    spec = yaml.safe_load((ROOT / "buildspec.yml").read_text())
    commit = uuid.uuid4().hex + "0123abcd"  # not HEAD: the tag must come from CodeBuild's variable
    tag, repo = commit[:12], f"smoke-{uuid.uuid4().hex[:6]}"
    env = {
        **engine.env,
        **{key: str(value) for key, value in spec["env"]["variables"].items()},
        **services.aws_env(moto_endpoint),  # ECR's get-authorization-token is answered by moto
        "CODEBUILD_RESOLVED_SOURCE_VERSION": commit,
        "CODEBUILD_BUILD_SUCCEEDING": "1",
        "CODEBUILD_SRC_DIR": str(ROOT),
        "AWS_ACCOUNT_ID": "123456789012",
        "AWS_DEFAULT_REGION": services.REGION,
        "IMAGE_REPO_NAME": repo,
        "REGISTRY": registry,
        # Only the buildspec's own unit tests (tests/unit/docker): quick, and never this test again.
        "UNIT_TESTS": "tests/unit/docker",
        "UNIT_TEST_ARGS": "-q",
        "DOCKER_PUSH_FLAGS": "--tls-verify=false" if engine.is_podman else "",
        "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"),
        "DOCKER_CONFIG": str(tmp_path / "docker-config"),
    }
    # CodeBuild fetches the RDS CA bundle from the internet (`make rds-ca`); this machine has
    # none, so a local CA file stands in for the download (curl reads file:// URLs).
    stand_in = services.make_tls_files(tmp_path / "rds-ca")["ca"]
    env["RDS_CA_URL"] = stand_in.as_uri()
    bundle = ROOT / "build" / "rds-ca" / "global-bundle.pem"
    had_bundle = bundle.exists()
    pushed = f"{registry}/{repo}:{tag}"
    built = f"sagemaker-optuna-chainer:{tag}"
    try:
        result = subprocess.run(
            ["bash", "-c", buildspec_script(spec)],
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
        assert result.returncode == 0, tail(result)
        assert json.loads((ROOT / "build" / "imageDetail.json").read_text()) == {"ImageURI": pushed}
        with urllib.request.urlopen(f"http://{registry}/v2/{repo}/tags/list", timeout=10) as response:
            assert sorted(json.load(response)["tags"]) == sorted([tag, "latest"])
        # Pull it back from the registry (not from the local tag) and run a job with it.
        engine.untag(pushed, f"{registry}/{repo}:latest", built)
        pull = ["pull", "--tls-verify=false"] if engine.is_podman else ["pull"]
        engine(*pull, pushed, timeout=600)
        base = write_job_folder(tmp_path / "opt_ml", {"n-trials": "1", "epochs": "1"}, small_digits)
        job = engine.run_container("--network=none", "-v", f"{base}:/opt/ml", pushed, "train")
        assert job.returncode == 0, tail(job)
        assert_one_model(base)
        assert "RDS CA bundle: 1 certificates" in result.stdout + result.stderr
        shipped = engine.run_container(
            "--network=none", pushed, "cat", "/usr/local/share/rds-ca/global-bundle.pem"
        )
        assert shipped.stdout == stand_in.read_text(), tail(shipped)
    finally:
        if not had_bundle:  # never leave the stand-in where a later `make image` would ship it
            bundle.unlink(missing_ok=True)
        engine.untag(pushed, f"{registry}/{repo}:latest", built)
