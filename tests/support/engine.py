"""The container engine (docker or podman) driven as the Makefile drives it, and the image built
once per test session by `make image` (the `engine` and `image` fixtures of tests/conftest.py)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import services

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 1500  # a cold build: wheelhouse from the index, then the image
JOB_TIMEOUT = 600
# Variables of an outer `make test` that must not leak into the `make` the tests call.
MAKE_VARIABLES = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")


@dataclass(frozen=True)
class Engine:
    """docker or podman, driven as the Makefile drives it (`make image-vars`)."""

    command: str
    env: dict[str, str]

    @property
    def is_podman(self) -> bool:
        return Path(self.command).name == "podman"

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [self.command, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{self.command} {shlex.join(args)} exited {result.returncode}:\n{tail(result)}"
            )
        return result

    def run_container(self, *args: str, timeout: float = JOB_TIMEOUT) -> subprocess.CompletedProcess:
        """`run --rm` in the foreground; a container that outlives the timeout is removed."""
        name = f"pytest-{uuid.uuid4().hex[:10]}"
        try:
            return self("run", "--rm", "--name", name, *args, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            self.remove(name)
            raise

    def remove(self, *names: str) -> None:
        """Kill (no grace period) and remove containers, if they exist."""
        for name in names:
            self("kill", name, check=False)
            self("rm", "-f", name, check=False)

    def untag(self, *images: str) -> None:
        for name in images:
            self("rmi", name, check=False)


def tail(result: subprocess.CompletedProcess, chars: int = 6000) -> str:
    return f"--- stdout\n{result.stdout[-chars:]}\n--- stderr\n{result.stderr[-chars:]}"


def make_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in MAKE_VARIABLES}
    env.update(extra)
    return env


def make(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def find_engine() -> Engine:
    """The `engine` fixture (tests/conftest.py): one per session, shared by the container tests."""
    if shutil.which("make") is None:
        services.unavailable("make is not installed")
    found = make("-s", "image-vars", env=make_env(), timeout=120)
    assert found.returncode == 0, tail(found)
    values = dict(line.split("=", 1) for line in found.stdout.splitlines() if "=" in line)
    extra = {"CONTAINERS_CONF": values["CONTAINERS_CONF"]} if values["CONTAINERS_CONF"] else {}
    engine = Engine(values["DOCKER"], make_env(**extra))
    if shutil.which(engine.command) is None or engine("info", check=False, timeout=60).returncode != 0:
        services.unavailable(f"no working container engine ({engine.command}): run `make engine`")
    return engine


def build_image(engine: Engine) -> Iterator[str]:
    """The `image` fixture: built once per session by `make image` under a tag of its own."""
    name = f"sagemaker-optuna-chainer:pytest-{os.getpid()}"
    started = time.monotonic()
    built = make("image", f"IMAGE={name}", env=engine.env, timeout=BUILD_TIMEOUT)
    assert built.returncode == 0, tail(built)
    print(f"make image: {time.monotonic() - started:.0f} s")
    yield name
    engine.untag(name)
