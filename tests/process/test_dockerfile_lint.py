"""docker/Dockerfile passes hadolint."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.engine import ROOT
from tests.support.jobs import VENV_BIN

# --- no engine needed ------------------------------------------------------------------------


@pytest.mark.process
def test_hadolint_passes_on_the_dockerfile():
    result = subprocess.run(
        [str(VENV_BIN / "hadolint"), str(ROOT / "docker" / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
