"""Which CA bundle verifies the database server: verified TLS by default on AWS.

``db-ssl-ca`` names one, and wins. Otherwise a database whose host is an RDS endpoint
(``*.rds.amazonaws.com``, ``*.rds.amazonaws.com.cn``: Aurora and RDS endpoints) is verified
against the RDS global CA bundle that the image carries (fetched by `make rds-ca`, which
CodeBuild runs: buildspec.yml), so the connector checks the server's certificate and name
instead of only encrypting. ``db-ssl-verify=false`` turns that default off (encryption without
verification, the driver's default). Any other host without ``db-ssl-ca`` keeps the driver's
default (a tunnel's 127.0.0.1 cannot match an RDS certificate's name anyway).
"""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import UserError

RDS_HOST_SUFFIXES = (".rds.amazonaws.com", ".rds.amazonaws.com.cn")
ENV_RDS_CA = "RDS_CA_BUNDLE"  # overrides where the bundle is looked for
RDS_CA_PATH = "/usr/local/share/rds-ca/global-bundle.pem"  # where docker/Dockerfile puts it
RDS_CA_URL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"


def is_rds_host(host: str | None) -> bool:
    return bool(host) and host.strip().rstrip(".").lower().endswith(RDS_HOST_SUFFIXES)


def rds_ca_path() -> str:
    return os.environ.get(ENV_RDS_CA) or RDS_CA_PATH


def ca_bundle(ssl_ca: str | None, verify: bool, host: str | None) -> str | None:
    """The CA bundle to verify ``host`` against, or None for the driver's default."""
    if ssl_ca:
        return ssl_ca
    if not verify or not is_rds_host(host):
        return None
    path = rds_ca_path()
    if not Path(path).is_file():
        raise UserError(
            f"Database host {host} is an RDS endpoint, verified against the RDS CA bundle, but there is "
            f"none at {path} (an image built without internet has none): pass db-ssl-ca (--db-ssl-ca) "
            f"with the bundle from {RDS_CA_URL}, or db-ssl-verify=false to encrypt without verifying"
        )
    return path
