"""The SageMaker Python SDK's own venvs (`make sdk`) and the scripts run in them."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import services

ROOT = services.ROOT
DRIVERS = ROOT / "tests" / "support" / "sdk_drivers"


def sdk_python(version: str) -> Path:
    python = ROOT / "build" / f"sdk-{version}" / "bin" / "python"
    if not (python.parent.parent / ".installed").exists():
        services.unavailable(f"SageMaker SDK {version} venv missing: run `make sdk`")
    return python


def log_tail(result: subprocess.CompletedProcess, chars: int = 6000) -> str:
    return f"--- stdout\n{result.stdout[-chars:]}\n--- stderr\n{result.stderr[-chars:]}"
