"""Shared fixtures (real data on disk, a real /opt/ml-like folder per test, real services) and
the test layers: every test is marked with exactly one of LAYERS, lives in the folder of that
layer (tests/unit/<package>/, tests/services/, tests/process/, tests/container/), and a unit test
can reach no process, no socket and no service fixture."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from devtools.localjob import digits_channels, write_job_folder
from tests.support import services
from tests.support.moto_setup import create_secret, use_moto

# The markers registered in pyproject.toml, which says what each means. Each layer may use what
# the layers before it use; a test is marked with the first that fits.
LAYERS = ("unit", "services", "process", "container")
# Fixtures that start or reach a service: a unit test requesting one is refused at collection.
SERVICE_FIXTURES = {
    "moto_endpoint", "aws", "aws_env", "mysql_db", "postgres_db", "private_mariadb", "private_db", "private_postgres",
    "shared_job",
    "engine", "image",
}  # fmt: skip


TESTS = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: an unmarked test fails every run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse, as a collection error, a test with no layer, with two, one outside its layer's
    folder (`make unit` collects tests/unit only), or a unit test that asks for a service."""
    problems = []
    for item in items:
        layers = sorted({mark.name for mark in item.iter_markers() if mark.name in LAYERS})
        folder = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else None
        if len(layers) != 1:
            problems.append(
                f"{item.nodeid}: marked {layers or 'with no layer'}; mark it with one of {', '.join(LAYERS)}"
            )
        elif folder != layers[0]:
            problems.append(f"{item.nodeid}: marked {layers[0]}; move it to tests/{layers[0]}/")
        elif layers == ["unit"] and SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            used = sorted(SERVICE_FIXTURES & set(item.fixturenames))
            problems.append(f"{item.nodeid}: a unit test that uses {', '.join(used)}; mark it services")
    if problems:
        raise pytest.UsageError(
            "Each test needs exactly one layer, in its folder, and a unit test no service (tests/conftest.py):\n"
            + "\n".join(problems)
        )


def _refuse_process(self: subprocess.Popen, args: object, *rest: object, **kwargs: object) -> None:
    raise AssertionError(f"a unit test started a process ({args!r}): mark the test `process`")


def _refuse_connect(
    connect: Callable[[socket.socket, object], object],
) -> Callable[[socket.socket, object], object]:
    """Wrap socket.connect (or connect_ex): network addresses refused, Unix sockets allowed."""

    def guarded(self: socket.socket, address: object) -> object:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"a unit test opened a connection to {address!r}: mark the test `services`")
        return connect(self, address)

    return guarded


@pytest.fixture(autouse=True)
def unit_isolation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a unit test, starting a process or connecting over the network fails the test, so the
    unit layer runs where no service is (the buildspec's unit step). Hand-written: the plug-ins
    that do this (pytest-socket) cover sockets only and would be one more dependency."""
    if request.node.get_closest_marker("unit") is None:
        return
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse_process)
    monkeypatch.setattr(socket.socket, "connect", _refuse_connect(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse_connect(socket.socket.connect_ex))


@pytest.fixture
def guard():
    """The job's signal guard installed, the previous SIGTERM and SIGALRM handlers put back after."""
    from entrypoint.job.stopping import Guard

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGALRM)}
    g = Guard()
    g.install()
    yield g
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits, split train/test (read from the package's own file)."""
    return digits_channels()


@pytest.fixture(scope="session")
def small_digits(digits):
    """A 400/200 subset: enough to learn something in a few epochs, fast enough for tests."""
    (xtr, ytr), (xte, yte) = digits["train"], digits["test"]
    return {"train": (xtr[:400], ytr[:400]), "test": (xte[:200], yte[:200])}


@pytest.fixture
def job_dir(tmp_path, small_digits):
    """Return a function that lays out a job folder with the given hyperparameters."""

    def make(hyperparameters: dict[str, str] | None = None, channels=None) -> Path:
        return write_job_folder(
            tmp_path / "opt_ml", hyperparameters or {}, small_digits if channels is None else channels
        )

    return make


# --- real services (see tests/support/services.py) -------------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint():
    """A moto server over HTTP for the whole session (Secrets Manager, SageMaker, S3, ECR)."""
    with services.moto_server() as url:
        yield url


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    """Point boto3 (here and in child processes) at the moto server; return a secret writer."""
    import boto3

    use_moto(monkeypatch, moto_endpoint)
    client = boto3.client("secretsmanager", region_name=services.REGION)

    def put_secret(doc: dict | str) -> str:
        name = f"test/optuna/{uuid.uuid4().hex[:8]}"
        create_secret(client, name, doc)
        return name

    return put_secret


@pytest.fixture(scope="module")
def aws_env(moto_endpoint):
    """Like `aws`, for a module's whole run (module-scoped fixtures that call moto need it)."""
    with pytest.MonkeyPatch.context() as mp:
        use_moto(mp, moto_endpoint)
        yield moto_endpoint


@pytest.fixture
def no_region(monkeypatch, tmp_path):
    """No region anywhere: no variable, no config file."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "TRAINING_JOB_ARN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    return monkeypatch


@pytest.fixture(scope="session")
def sdk_config_env(moto_endpoint, tmp_path_factory) -> dict[str, str]:
    """The SageMaker SDK's environment (tests/support/sdk.py): telemetry off in its config
    file, AWS calls to moto."""
    folder = tmp_path_factory.mktemp("sdk-config")
    config = folder / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
        )
    )
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_", "AWS_"))},
        **services.aws_env(moto_endpoint),
        "AWS_ENDPOINT_URL": moto_endpoint,  # any other AWS call the SDK makes goes to moto too
        "AWS_DEFAULT_REGION": "us-east-1",
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config),
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        "HOME": str(folder),  # nothing from this machine's ~/.sagemaker or ~/.aws
    }


@pytest.fixture
def mysql_db():
    with services.mysql_database() as db:
        yield db


@pytest.fixture
def postgres_db():
    with services.postgres_database() as db:
        yield db


@pytest.fixture(scope="session")
def private_mariadb(tmp_path_factory):
    server = services.PrivateMariaDB(tmp_path_factory.mktemp("mariadb"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def private_postgres():
    server = services.PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_db(private_mariadb):
    """A fresh database on the private (TLS, restartable) MariaDB, which is running at start."""
    if private_mariadb.proc is None:
        private_mariadb.start()
    with services.mysql_database(port=private_mariadb.port) as db:
        yield db


@pytest.fixture
def shared_job(aws, mysql_db, tmp_path, small_digits):
    """Return a function that lays out job folders that all join study 'shared' in mysql_db."""
    secret = aws(mysql_db.credentials(engine="mysql"))

    def make(
        name: str, db: services.MySqlDatabase = mysql_db, secret_name: str | None = None, **hps: str
    ) -> Path:
        base = {
            "host": "127.0.0.1",
            "db-port": str(db.port),
            "db-name": db.name,
            "db-secret": secret_name or secret,
            "region-name": services.REGION,
            "study-name": "shared",
            "epochs": "1",
            "seed": "11",
        }
        return write_job_folder(tmp_path / name, {**base, **hps}, small_digits)

    return make


# --- the image, built once per session for the container tests (tests/support/engine.py) ---------------


@pytest.fixture(scope="session")
def engine():
    from tests.support.engine import find_engine

    return find_engine()


@pytest.fixture(scope="session")
def image(engine):
    from tests.support.engine import build_image

    yield from build_image(engine)


@pytest.fixture(scope="session")
def font_cache() -> None:
    """matplotlib builds its font cache at its first import on a machine (it runs fc-list): done
    here, before the unit layer refuses processes, so that unit tests that draw run on a fresh machine."""
    try:
        import matplotlib.font_manager  # noqa: F401
    except ImportError:  # the plots extra is not installed: nothing to build
        pass
