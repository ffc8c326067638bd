"""Verified TLS by default on AWS (hpo_study/database/tls.py), in process: an RDS endpoint is verified
against the RDS CA bundle, db-ssl-ca overrides."""

from __future__ import annotations

import pytest

from core.errors import UserError
from hpo_study import settings
from hpo_study.database import tls

ENDPOINT = "optuna.cluster-abc123.us-east-1.rds.amazonaws.com"


@pytest.mark.unit
@pytest.mark.parametrize(
    "host, rds",
    [
        (ENDPOINT, True),
        ("db.cluster-ro-abc.eu-west-1.rds.amazonaws.com.", True),
        ("x.rds.cn-north-1.rds.amazonaws.com.cn", False),  # China: a bundle of its own (db-ssl-ca)
        ("127.0.0.1", False),
        ("rds.amazonaws.com.example.org", False),
        (None, False),
    ],
)
def test_rds_hosts(host, rds):
    assert tls.is_rds_host(host) is rds


@pytest.mark.unit
def test_bundle_choice(monkeypatch, tmp_path):
    bundle = tmp_path / "rds.pem"
    monkeypatch.setenv(tls.ENV_RDS_CA, str(bundle))
    with pytest.raises(UserError, match=r"is an RDS endpoint.*none at .*rds.pem.*db-ssl-verify=false"):
        tls.ca_bundle(None, True, ENDPOINT)  # the image has no bundle: fail, do not go unverified
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert tls.ca_bundle(None, True, ENDPOINT) == str(bundle)
    assert tls.ca_bundle("/mine.pem", True, ENDPOINT) == "/mine.pem"  # db-ssl-ca wins
    assert tls.ca_bundle(None, False, ENDPOINT) is None  # told otherwise
    assert tls.ca_bundle(None, True, "127.0.0.1") is None  # not RDS: the driver's default
    # RDS Proxy: ACM certificates, verified against the system's trust store (Amazon Root CAs).
    proxy = "hpo.proxy-abc123.us-east-1.rds.amazonaws.com"
    assert tls.is_rds_proxy_host(proxy) and not tls.is_rds_proxy_host(ENDPOINT)
    system = tmp_path / "system.pem"
    monkeypatch.setenv(tls.ENV_PROXY_CA, str(system))
    with pytest.raises(UserError, match="none at .*system.pem"):
        tls.ca_bundle(None, True, proxy)
    system.write_text("-----BEGIN CERTIFICATE-----\n")
    assert tls.ca_bundle(None, True, proxy) == str(system)
    parsed = settings.parse({"db-secret": "s", "db-ssl-verify": "false"})
    assert parsed.db_ssl_verify is False and settings.parse({}).db_ssl_verify is True
