"""The launcher's AWS identity: `--profile` and `--region` reach every call, the secret's read
included (one session per command). A named profile with its own region and keys lives in an
AWS_CONFIG_FILE; the environment's default region is another one, where the secret is not.
Before the fix the secret was checked with the command's session and read again with a fresh
default session, which knew neither the profile nor --region.
"""

from __future__ import annotations

import uuid

import boto3
import pytest

from tests.support.cli import run_cli
from tests.support.moto_setup import create_secret, use_moto

pytestmark = pytest.mark.services

PROFILE_REGION = "eu-west-1"  # services.REGION (the environment's default) is us-east-1


@pytest.fixture
def profile_world(moto_endpoint, mysql_db, tmp_path, monkeypatch):
    """A study on MariaDB whose secret exists only in the profile's region."""
    use_moto(monkeypatch, moto_endpoint)
    keys = {"aws_access_key_id": "profilekey", "aws_secret_access_key": "profilesecret"}
    config = tmp_path / "config"
    config.write_text(f"[profile hpo]\nregion = {PROFILE_REGION}\n")
    credentials = tmp_path / "credentials"
    credentials.write_text("[hpo]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    secret = f"identity/{uuid.uuid4().hex[:8]}"
    secrets = boto3.client("secretsmanager", region_name=PROFILE_REGION, **keys)
    create_secret(secrets, secret, mysql_db.secret_document())
    mysql_db.study_with_trials("identity", [(None, 0.5)])
    return ["--study", "identity", "--db-secret", secret, "--json"]


def test_status_reads_the_secret_with_the_named_profile(profile_world, monkeypatch):
    # The environment's region would win over the profile's (botocore's order): only the
    # profile names one here, and only the session built from --profile knows it.
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    result = run_cli("status", "--profile", "hpo", *profile_world)
    assert result.code == 0, result.err
    assert result.json()["states"]["COMPLETE"] == 1


def test_status_reads_the_secret_in_the_given_region(profile_world):
    result = run_cli("status", "--region", PROFILE_REGION, *profile_world)
    assert result.code == 0, result.err


def test_without_them_the_default_region_has_no_such_secret(profile_world):
    result = run_cli("status", *profile_world)
    assert result.code == 1 and "does not exist in this region" in result.err, result.err


def test_an_unknown_profile_is_named(profile_world):
    result = run_cli("status", "--profile", "nope", *profile_world)
    assert result.code == 1 and "nope" in result.err, result.err


def test_an_unknown_profile_is_named_with_aws_data_path_set(profile_world, monkeypatch, tmp_path):
    """With AWS_DATA_PATH set (the AWS CLI sets it; a user may), botocore names a missing profile
    when the first client is made, not when the session is: still one line, not a traceback."""
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    result = run_cli("status", "--profile", "nope", *profile_world)
    assert result.code == 1 and "nope" in result.err and "Traceback" not in result.err, result.err
