"""buildspec.yml: a CodeBuild 0.2 spec that tests, builds and pushes the commit's tag."""

from __future__ import annotations

import pytest
import yaml

from tests.support.engine import ROOT

BUILDSPEC_PHASES = ("install", "pre_build", "build", "post_build")


@pytest.mark.unit
def test_buildspec_is_a_codebuild_0_2_spec_that_pushes_the_commit_tag():
    text = (ROOT / "buildspec.yml").read_text()
    spec = yaml.safe_load(text)
    assert str(spec["version"]) == "0.2"
    assert tuple(spec["phases"]) == BUILDSPEC_PHASES
    assert spec["phases"]["install"]["runtime-versions"] == {"python": "3.11"}
    # The RDS CA bundle first (hpo_study/database/tls.py): CodeBuild has internet, a failed fetch fails.
    assert spec["phases"]["build"]["commands"] == ["make rds-ca", "make image"]
    pre_build = "\n".join(spec["phases"]["pre_build"]["commands"])
    assert "make unit" in pre_build and "make login" in pre_build
    assert "CODEBUILD_RESOLVED_SOURCE_VERSION" in pre_build
    assert any("make push" in c for c in spec["phases"]["post_build"]["commands"])
    assert spec["artifacts"]["files"] == ["build/imageDetail.json"]
    for name in ("AWS_ACCOUNT_ID", "AWS_DEFAULT_REGION", "IMAGE_REPO_NAME"):
        assert f"#   {name}" in text, f"{name} is not documented in buildspec.yml"
