"""Verified TLS by default on AWS (hpo_study/database/tls.py): a job whose database host is an RDS
endpoint verifies the server against the RDS CA bundle; db-ssl-ca overrides; a wrong host name
and a self-signed server are refused.

A private MariaDB (tests/support/services.py) serves a certificate that a local CA signs, for a made-up
RDS endpoint name; that name resolves to 127.0.0.1 in this process only (the test's own
resolver), and the local CA stands in for the RDS bundle (RDS_CA_BUNDLE).
"""

from __future__ import annotations

import socket
import subprocess

import pytest
import sqlalchemy

from hpo_study import settings
from hpo_study.database import dberrors, locate, tls
from tests.support import services

ENDPOINT = "optuna.cluster-abc123.us-east-1.rds.amazonaws.com"
OTHER_ENDPOINT = "other.cluster-abc123.us-east-1.rds.amazonaws.com"  # not in the certificate


@pytest.fixture(scope="module")
def rds_like(tmp_path_factory):
    """A private MariaDB with a certificate for ENDPOINT signed by a local CA."""
    folder = tmp_path_factory.mktemp("rds-tls")
    server = services.PrivateMariaDB(folder)
    server.tls = services.make_tls_files(folder / "signed", dns_names=(ENDPOINT,))
    server.start()
    try:
        with services.mysql_database(port=server.port) as db:
            server.db = db  # a user with a password, as RDS has
            yield server
    finally:
        server.stop()


@pytest.fixture
def resolver(monkeypatch):
    """The made-up RDS names resolve to 127.0.0.1, in this process only."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        return real("127.0.0.1" if str(host).endswith(".rds.amazonaws.com") else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def secret(aws, rds_like):
    def make(host: str) -> str:
        return aws({**rds_like.db.secret_document(engine="mariadb"), "host": host})

    return make


def _connect(hps: dict[str, str]) -> str:
    """Resolve the database as a job does and connect; return the TLS cipher in use."""
    db = locate.resolve(settings.parse(hps), "/nonexistent")
    engine = sqlalchemy.create_engine(
        db.url, poolclass=sqlalchemy.pool.NullPool, connect_args=db.connect_args
    )
    try:
        with engine.connect() as conn:
            return conn.execute(sqlalchemy.text("SHOW STATUS LIKE 'Ssl_cipher'")).one()[1]
    finally:
        engine.dispose()


@pytest.mark.services
def test_an_rds_endpoint_is_verified_against_the_bundle_by_default(rds_like, secret, resolver, monkeypatch):
    monkeypatch.setenv(tls.ENV_RDS_CA, str(rds_like.tls["ca"]))  # stands in for the RDS bundle
    db = locate.resolve(settings.parse({"db-secret": secret(ENDPOINT)}), "/nonexistent")
    assert db.connect_args["ssl_ca"] == str(rds_like.tls["ca"]) and db.connect_args["ssl_verify_identity"]
    assert _connect({"db-secret": secret(ENDPOINT)})  # a cipher: encrypted and verified


@pytest.mark.services
def test_a_wrong_host_name_is_refused(rds_like, secret, resolver, monkeypatch):
    monkeypatch.setenv(tls.ENV_RDS_CA, str(rds_like.tls["ca"]))
    with pytest.raises(
        sqlalchemy.exc.DBAPIError, match="CERTIFICATE_VERIFY_FAILED.*Hostname mismatch"
    ) as info:
        _connect({"db-secret": secret(OTHER_ENDPOINT)})
    # A server that fails verification is no outage: the job fails at once, not after db-retry-timeout.
    assert not dberrors.is_transient(info.value), [type(e) for e in dberrors._chain(info.value)]
    # Told otherwise, it only encrypts.
    assert _connect({"db-secret": secret(OTHER_ENDPOINT), "db-ssl-verify": "false"})


@pytest.mark.services
def test_db_ssl_ca_overrides_the_bundle(rds_like, secret, resolver, monkeypatch, tmp_path):
    other = services.make_tls_files(tmp_path / "other")["ca"]  # a CA that did not sign the server
    monkeypatch.setenv(tls.ENV_RDS_CA, str(other))
    with pytest.raises(sqlalchemy.exc.DBAPIError, match="CERTIFICATE_VERIFY_FAILED"):
        _connect({"db-secret": secret(ENDPOINT)})
    assert _connect({"db-secret": secret(ENDPOINT), "db-ssl-ca": str(rds_like.tls["ca"])})


@pytest.mark.services
def test_a_self_signed_server_is_refused(tmp_path, aws, resolver, monkeypatch):
    folder = tmp_path / "self"
    server = services.PrivateMariaDB(folder)
    cert, key = folder / "self.pem", folder / "self.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={ENDPOINT}",
         "-addext", f"subjectAltName=DNS:{ENDPOINT}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server.tls = {"ca": cert, "cert": cert, "key": key}
    server.start()
    try:
        monkeypatch.setenv(tls.ENV_RDS_CA, str(services.make_tls_files(tmp_path / "ca")["ca"]))
        with services.mysql_database(port=server.port) as db:
            name = aws({**db.secret_document(), "host": ENDPOINT})
            with pytest.raises(sqlalchemy.exc.DBAPIError, match="CERTIFICATE_VERIFY_FAILED"):
                _connect({"db-secret": name})
    finally:
        server.stop()
