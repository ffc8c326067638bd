"""Secrets Manager credentials, against a real moto server over HTTP (boto3 is not mocked)."""

from __future__ import annotations

import boto3
import pytest

from core.errors import UserError
from hpo_study.database import credentials
from tests.support import services
from tests.support.errors import one_line
from tests.support.moto_setup import ADMIN_SETUP_CALLS, iam_user, key_env, use_moto

PASSWORD = services.HARD_PASSWORD


@pytest.mark.services
def test_fetch_through_secrets_manager(aws):
    name = aws({"username": "u", "password": PASSWORD})
    assert credentials.fetch(name, services.REGION).password == PASSWORD


@pytest.mark.services
def test_missing_secret(aws):
    with pytest.raises(UserError, match="Secret 'no/such/secret' does not exist in this region"):
        credentials.fetch("no/such/secret", services.REGION)


@pytest.mark.services
def test_no_region(aws, monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    with pytest.raises(UserError, match="No AWS region for secret 'x': set the 'region-name' hyperparameter"):
        credentials.fetch("x", None)


@pytest.mark.services
def test_access_denied_with_iam_enforced(tmp_path, monkeypatch):
    """A moto server that enforces IAM, and a user without secretsmanager:GetSecretValue."""
    with services.moto_server(iam_after=ADMIN_SETUP_CALLS) as url:
        use_moto(monkeypatch, url, AWS_ENDPOINT_URL_IAM=url)
        keys = iam_user(boto3.client("iam", region_name=services.REGION), "no-secrets", None)
        boto3.client("secretsmanager", region_name=services.REGION).create_secret(
            Name="locked", SecretString="{}"
        )
        use_moto(monkeypatch, url, **key_env(keys))
        with pytest.raises(
            UserError,
            match="Secret 'locked' cannot be read: the training role lacks secretsmanager:GetSecretValue",
        ):
            credentials.fetch("locked", services.REGION)


@pytest.mark.services
def test_a_binary_secret_is_said_to_be_binary(moto_endpoint, monkeypatch):
    import boto3

    from hpo_study.database import credentials

    use_moto(monkeypatch, moto_endpoint)
    client = boto3.client("secretsmanager", region_name=services.REGION)
    client.create_secret(Name="test/bin-secret", SecretBinary=b"\x00\x01s3cr3t")
    with pytest.raises(UserError) as info:
        credentials.fetch("test/bin-secret", services.REGION)
    assert "binary" in one_line(info) and "s3cr3t" not in str(info.value)
