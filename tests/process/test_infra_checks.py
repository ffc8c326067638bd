"""infra/optuna-hpo.yaml: the static checks (cfn-lint, checkov, parliament) in their own venv
(`make infra-tools`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.infra import ROOT, TEMPLATE, load_template

TOOLS = ROOT / "build" / "infra-tools" / "bin"


# --- static checks ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tools() -> Path:
    """The linters' venv (build/infra-tools), made by `make infra-tools` when missing or stale."""
    subprocess.run(["make", "-s", "infra-tools"], cwd=ROOT, check=True, capture_output=True, timeout=900)
    return TOOLS


def _run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.process
def test_cfn_lint_has_no_error_or_warning(tools):
    result = _run(tools / "cfn-lint", TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.process
def test_checkov_has_no_failed_check_and_every_skip_has_a_reason(tools):
    result = _run(
        tools / "checkov", "--file", TEMPLATE, "--framework", "cloudformation",
        "--quiet", "--compact", "--skip-download", "--output", "json",
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["summary"]["failed"] == 0, result.stdout[-3000:]
    assert report["summary"]["passed"] >= 40
    for resource in load_template()["Resources"].values():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert len(skip.get("comment", "")) > 30, skip


@pytest.mark.process
def test_parliament_finds_nothing_in_any_policy(tools):
    result = _run(tools / "python", "infra/check_policies.py", TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 policy variants of 3 policies checked" in result.stdout


@pytest.mark.process
def test_parliament_check_reports_a_bad_policy(tools, tmp_path):
    bad = TEMPLATE.read_text().replace("secretsmanager:GetSecretValue", "secretsmanager:GetSecretValues")
    (tmp_path / "bad.yaml").write_text(bad)
    result = _run(tools / "python", "infra/check_policies.py", tmp_path / "bad.yaml")
    assert result.returncode == 1 and "UNKNOWN_ACTION" in result.stdout, result.stdout
