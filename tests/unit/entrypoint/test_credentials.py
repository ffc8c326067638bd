"""Secrets Manager credentials, against a real moto server over HTTP (boto3 is not mocked)."""

import json

import boto3
import pytest

from core.errors import UserError
from entrypoint import credentials
from tests.support import services
from tests.support.moto_setup import ADMIN_SETUP_CALLS, iam_user, key_env, use_moto

PASSWORD = services.HARD_PASSWORD


@pytest.mark.unit
def test_rds_format_is_read_in_full():
    doc = {
        "username": "admin",
        "password": PASSWORD,
        "engine": "aurora-postgresql",
        "host": "db.x",
        "port": "5433",
        "dbname": "hpo",
    }
    creds = credentials.parse_secret("s", json.dumps(doc))
    assert (creds.username, creds.password, creds.host, creds.port, creds.dbname, creds.engine) == (
        "admin",
        PASSWORD,
        "db.x",
        5433,
        "hpo",
        "postgresql",
    )
    assert PASSWORD not in repr(creds)


@pytest.mark.unit
def test_sample_format_has_only_username_and_password():
    creds = credentials.parse_secret("s", json.dumps({"username": "u", "password": "p"}))
    assert (creds.host, creds.port, creds.dbname, creds.engine) == (None, None, None, None)


@pytest.mark.unit
@pytest.mark.parametrize(
    "body, fragment",
    [
        ("not json " + PASSWORD, "Secret 'demo/db' is not JSON"),
        (json.dumps([PASSWORD]), "must be a JSON object"),
        (json.dumps({"username": "u"}), "lacks 'password'"),
        (json.dumps({"password": PASSWORD}), "lacks 'username'"),
        (json.dumps({"username": "u", "password": PASSWORD, "port": "x"}), "'port' that is not a number"),
        (json.dumps({"username": "u", "password": PASSWORD, "engine": "oracle"}), "engine 'oracle'"),
    ],
)
def test_malformed_secrets_name_the_secret_and_never_the_content(body, fragment):
    with pytest.raises(UserError) as info:
        credentials.parse_secret("demo/db", body)
    assert fragment in str(info.value)
    assert PASSWORD not in str(info.value) and "p@ss" not in str(info.value)


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
