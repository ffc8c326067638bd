"""The laptop's CLI depends on core/ and hpo_study/ only: it never loads the training job's package,
serving, Chainer or the training toolkit; boto3 and the plotting modules load only when a
command needs them. hpo_study/, shared by the job and the laptop, imports neither side."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.process  # a fresh interpreter: this process has imported everything

REPO = Path(__file__).parents[2]
NEVER = {"entrypoint", "serving", "devtools", "tests", "chainer", "sagemaker_training"}
LAZY = ("boto3", "botocore", "optuna.visualization", "matplotlib", "plotly")


def _loaded(code: str) -> dict[str, list[str]]:
    check = (
        "import json, sys\n"
        f"{code}\n"
        "roots = {name.partition('.')[0] for name in sys.modules}\n"
        f"lazy = [m for m in {LAZY!r} if m in sys.modules]\n"
        f"print(json.dumps({{'never': sorted(roots & set({sorted(NEVER)!r})), 'lazy': lazy}}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_launcher_loads_neither_the_job_nor_serving_nor_boto3_nor_plots():
    """Every launcher module, the CLI's parser built: no training or serving package, and no boto3
    or plotting module before a command calls AWS or draws."""
    modules = sorted(
        p.stem for p in (REPO / "launcher").glob("*.py") if p.stem not in ("__init__", "__main__", "plots")
    )
    assert "cli" in modules and "best" in modules, f"no launcher modules found under {REPO}"
    loaded = _loaded(f"import {', '.join('launcher.' + m for m in modules)}\nlauncher.cli.build_parser()")
    assert loaded == {"never": [], "lazy": []}


def test_the_plots_module_loads_no_job_or_serving_package():
    assert _loaded("import launcher.plots")["never"] == []


def test_the_shared_study_package_imports_neither_the_job_nor_the_launcher():
    modules = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts)
        for p in (REPO / "hpo_study").rglob("*.py")
        if p.stem != "__init__"
    )
    assert "hpo_study.standings" in modules, f"no hpo_study modules found under {REPO}"
    check = f"import {', '.join(modules)}\nimport sys\nassert not [m for m in sys.modules if m.startswith('launcher')]"
    assert _loaded(check)["never"] == []
