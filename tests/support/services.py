"""Real services for tests: a moto server, databases on the machine's MariaDB and PostgreSQL,
and private MariaDB and PostgreSQL servers (restartable) that a test may stop without hurting
others.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mysql.connector
import optuna
import psycopg2
import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}
# Every character the AWS sample breaks on, plus quotes and spaces.
HARD_PASSWORD = "p@ss/w:rd%{x}#?' \"a b\\c;&=+"
REGION = "us-east-1"


def unavailable(reason: str) -> None:
    """Tests that need a service must run in CI: fail there, skip on a machine without it."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it: see .ci/run)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout} s")
        time.sleep(0.1)  # polling pace


@contextlib.contextmanager
def moto_server(
    iam_after: int | None = None, resource_auth: bool = False, training_logs: Path | None = None
) -> Iterator[str]:
    """A real moto server over HTTP on a free port; yields its endpoint URL.

    ``iam_after``: enforce IAM on every call after that many unauthenticated ones (moto's
    INITIAL_NO_AUTH_ACTION_COUNT: the calls that make the first user and its keys).
    ``resource_auth``: also check the Resource of Secrets Manager and ECR calls
    (tests/support/moto_resource_auth.py).
    ``training_logs``: a folder of job logs from which training jobs report their status and
    final metrics as SageMaker does (tests/support/moto_training.py; resource checks included).
    """
    port = free_port()
    command = (
        [sys.executable, "-m", "tests.support.moto_training"]
        if training_logs is not None
        else [sys.executable, "-m", "tests.support.moto_resource_auth"]
        if resource_auth
        else [str(VENV_BIN / "moto_server")]
    )
    env = dict(os.environ)
    if training_logs is not None:
        env["MOTO_TRAINING_LOGS"] = str(training_logs)
    if iam_after is not None:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(iam_after)
    proc = subprocess.Popen(
        [*command, "-H", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: urllib.request.urlopen(f"{url}/moto-api/", timeout=1).status == 200, 30, "moto server"
        )
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def aws_env(endpoint: str) -> dict[str, str]:
    """Environment for boto3 in a child process (or the test process) to use the moto server."""
    return {
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": endpoint,  # botocore: service id "Secrets Manager"
        "AWS_ENDPOINT_URL_SAGEMAKER": endpoint,
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ENDPOINT_URL_ECR": endpoint,
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": endpoint,
        "AWS_ENDPOINT_URL_CLOUDWATCH": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }


def mariadb_root(**overrides):
    try:
        return mysql.connector.connect(**{**MARIADB, **overrides}, connection_timeout=5)
    except mysql.connector.Error as exc:
        unavailable(f"MariaDB not reachable at 127.0.0.1:3306 ({exc})")


@dataclass
class MySqlDatabase:
    host: str
    port: int
    name: str
    user: str
    password: str

    def connect(self):
        return mysql.connector.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, database=self.name
        )

    @property
    def url(self) -> str:
        """Its SQLAlchemy URL, without the password (MariaDB only)."""
        return f"mysql+mysqlconnector://{self.user}@{self.host}:{self.port}/{self.name}"

    def optuna_storage(self) -> optuna.storages.RDBStorage:
        """Optuna's storage on it, the password passed apart from the URL as the jobs do."""
        return optuna.storages.RDBStorage(
            self.url, engine_kwargs={"connect_args": {"password": self.password}}
        )

    def credentials(self, **extra) -> dict:
        """A secret in the AWS sample's form: user name and password (and `extra` fields)."""
        return {"username": self.user, "password": self.password, **extra}

    def secret_document(self, **extra) -> dict:
        """A secret in the RDS form, which also names the host, port and database."""
        return self.credentials(host=self.host, port=self.port, dbname=self.name, **extra)

    def study_with_trials(self, name: str, trials: list[tuple[str | None, float | None]]) -> None:
        """Create study `name` (maximize) holding one trial per (job name, value); None fails it."""
        storage = self.optuna_storage()
        try:
            study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
            for job_name, value in trials:
                trial = study.ask()
                if job_name:
                    trial.set_user_attr("job_name", job_name)
                if value is None:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                else:
                    study.tell(trial, value)
        finally:
            storage.engine.dispose()


@contextlib.contextmanager
def mysql_database(password: str = HARD_PASSWORD, port: int = 3306, **root_args) -> Iterator[MySqlDatabase]:
    """A fresh, empty database and a user that owns it, dropped afterwards."""
    suffix = uuid.uuid4().hex[:10]
    db = MySqlDatabase("127.0.0.1", port, f"t_{suffix}", f"u_{suffix}", password)
    root = mariadb_root(port=port, **root_args)
    cur = root.cursor()
    cur.execute(f"CREATE DATABASE {db.name}")
    cur.execute(f"CREATE USER '{db.user}'@'%' IDENTIFIED BY %s", (password,))
    cur.execute(f"GRANT ALL ON {db.name}.* TO '{db.user}'@'%'")
    try:
        yield db
    finally:
        with contextlib.suppress(mysql.connector.Error):
            root.reconnect(attempts=3, delay=1)
            cur = root.cursor()
            cur.execute(f"DROP DATABASE IF EXISTS {db.name}")
            cur.execute(f"DROP USER IF EXISTS '{db.user}'@'%'")
        root.close()


@contextlib.contextmanager
def postgres_database(password: str = HARD_PASSWORD) -> Iterator[MySqlDatabase]:
    suffix = uuid.uuid4().hex[:10]
    db = MySqlDatabase("127.0.0.1", 5432, f"t_{suffix}", f"u_{suffix}", password)
    try:
        root = psycopg2.connect(**POSTGRES, connect_timeout=5)
    except psycopg2.Error as exc:
        unavailable(f"PostgreSQL not reachable at 127.0.0.1:5432 ({exc})")
    root.autocommit = True
    with root.cursor() as cur:
        cur.execute(f"CREATE ROLE {db.user} LOGIN PASSWORD %s", (password,))
        cur.execute(f"CREATE DATABASE {db.name} OWNER {db.user}")
    try:
        yield db
    finally:
        with root.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)")
            cur.execute(f"DROP ROLE IF EXISTS {db.user}")
        root.close()


def make_tls_files(folder: Path, dns_names: tuple[str, ...] = ()) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost (and ``dns_names``), made with the
    openssl CLI."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert, ext = (
        folder / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem", "san.ext")
    )
    names = "".join(f",DNS:{name}" for name in dns_names)
    ext.write_text(f"subjectAltName=IP:127.0.0.1,DNS:localhost{names}\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        str(cert),
        "-extfile",
        str(ext),
    )
    return {"ca": ca, "cert": cert, "key": key}


class PrivateMariaDB:
    """A MariaDB server of the test's own (own data folder and port), with TLS, that tests may
    stop and start to simulate an outage without touching the machine's shared server."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.tls = make_tls_files(folder / "tls")
        self.datadir = folder / "data"
        self.proc: subprocess.Popen | None = None
        if shutil.which("mariadb-install-db") is None:
            unavailable("mariadb-install-db not installed")
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--user=root",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.folder / 'mysqld.sock'}",
                f"--pid-file={self.folder / 'mysqld.pid'}",
                f"--ssl-ca={self.tls['ca']}",
                f"--ssl-cert={self.tls['cert']}",
                f"--ssl-key={self.tls['key']}",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=32M",
                "--max-connections=300",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "error.log", "ab"),
        )
        wait_for(
            lambda: (
                mysql.connector.connect(
                    host="127.0.0.1", port=self.port, user="root", password="", connection_timeout=1
                ).close()
                is None
            ),
            60,
            "private MariaDB",
        )

    @contextlib.contextmanager
    def stalled(self) -> Iterator[None]:
        """The server stops answering without closing anything (SIGSTOP), as on a dropped packet
        path or a paused instance: the kernel still accepts connections, nothing replies."""
        assert self.proc is not None, "start the server first"
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
            self.proc = None


class PrivatePostgres:
    """A PostgreSQL server of the test's own (own data folder and port; its superuser trusted,
    other roles log in with a password), run as the ``postgres`` user (PostgreSQL refuses
    root), that a test may stop to simulate a stall or use to rotate a password."""

    USER = "postgres"

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            unavailable("PostgreSQL's initdb (Debian's postgresql package) not installed")
        self.bin = bins[-1].parent
        # Not under pytest's folder, which only root may enter: the server runs as postgres.
        self.folder = Path(tempfile.mkdtemp(prefix="private-postgres-"))
        self.folder.chmod(0o777)  # its data, socket and log are written here
        self.port = free_port()
        self.datadir = self.folder / "data"
        self.proc: subprocess.Popen | None = None
        try:
            self._init_data()
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def _init_data(self) -> None:
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.datadir), "-U", self.USER,
             "--auth-local=trust", "--auth-host=scram-sha-256"],
            user=self.USER,
            check=True,
            capture_output=True,
            timeout=120,
        )  # fmt: skip
        # The superuser without a password over TCP (the first matching line wins); every other
        # role logs in with its password, so a test can rotate one.
        hba = self.datadir / "pg_hba.conf"
        hba.write_text(f"host all {self.USER} 127.0.0.1/32 trust\n" + hba.read_text())

    def start(self) -> None:
        self.proc = subprocess.Popen(  # the postmaster itself (no runuser between: see stalled())
            [str(self.bin / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
             "-k", str(self.folder), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            user=self.USER,
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "error.log", "ab"),
        )  # fmt: skip
        wait_for(
            lambda: psycopg2.connect(**self.connect_args, connect_timeout=2).close() is None,
            60,
            "private PostgreSQL",
        )

    @property
    def connect_args(self) -> dict:
        return {"host": "127.0.0.1", "port": self.port, "user": self.USER, "dbname": "postgres"}

    @property
    def url(self) -> str:
        return self.url_of("postgres")

    def url_of(self, database: str) -> str:
        return f"postgresql+psycopg2://{self.USER}@127.0.0.1:{self.port}/{database}"

    def new_role_database(self, password: str = HARD_PASSWORD) -> MySqlDatabase:
        """A fresh role that logs in with ``password`` (scram) and a database it owns."""
        suffix = uuid.uuid4().hex[:10]
        db = MySqlDatabase("127.0.0.1", self.port, f"t_{suffix}", f"u_{suffix}", password)
        self.admin(f"CREATE ROLE {db.user} LOGIN PASSWORD %s", password)
        self.admin(f"CREATE DATABASE {db.name} OWNER {db.user}")
        return db

    def rotate_password(self, db: MySqlDatabase, new_password: str) -> None:
        """Change the role's password and end every connection it has (as a rotation does)."""
        self.admin(f"ALTER ROLE {db.user} PASSWORD %s", new_password)
        self.admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", db.user)
        db.password = new_password

    def admin(self, sql: str, *params: object) -> None:
        """One statement as the superuser, outside a transaction."""
        conn = psycopg2.connect(**self.connect_args, connect_timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql, params or None)
        finally:
            conn.close()

    def new_database(self) -> str:
        """A fresh database on this server; its name."""
        name = f"t_{uuid.uuid4().hex[:10]}"
        self.admin(f"CREATE DATABASE {name}")
        return name

    @contextlib.contextmanager
    def stalled(self) -> Iterator[None]:
        """The postmaster and every process it started stop (SIGSTOP): the kernel still accepts
        connections and acknowledges what is sent, nothing replies. Each backend is a session
        of its own (PostgreSQL calls setsid), so they are stopped one by one."""
        assert self.proc is not None, "start the server first"
        processes = self._processes()
        for pid in processes:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in processes:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def _processes(self) -> list[int]:
        """The postmaster and its children (Linux /proc)."""
        assert self.proc is not None
        with (
            contextlib.suppress(FileNotFoundError),
            open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f,
        ):
            return [self.proc.pid, *(int(child) for child in f.read().split())]
        return [self.proc.pid]

    def stop(self) -> None:
        try:
            if self.proc is not None:
                for pid in self._processes():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
                self.proc.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
                try:
                    self.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                self.proc = None
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
