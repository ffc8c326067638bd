"""Which CA bundle verifies the database server: verified TLS by default on AWS.

``db-ssl-ca`` names one, and wins. Otherwise a database whose host is an RDS endpoint
(``*.rds.amazonaws.com``: Aurora and RDS endpoints; RDS Proxy endpoints against the system's
trust store, below) is verified
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

# Commercial and GovCloud endpoints chain to the RDS CAs of the global bundle. China regions have
# a bundle of their own (a different download): their hosts keep the driver's default unless
# db-ssl-ca names that bundle.
RDS_HOST_SUFFIXES = (".rds.amazonaws.com",)
# RDS Proxy endpoints (<name>.proxy-<id>.<region>.rds.amazonaws.com) present certificates from
# AWS Certificate Manager, which chain to the Amazon Root CAs (Amazon Trust Services), not the
# RDS CAs ("Using TLS/SSL with RDS Proxy", RDS user guide): those are in the system's trust store.
RDS_PROXY_LABEL = ".proxy-"
ENV_PROXY_CA = "RDS_PROXY_CA_BUNDLE"  # overrides the system bundle for proxy endpoints
SYSTEM_CA_PATH = "/etc/ssl/certs/ca-certificates.crt"  # Debian's ca-certificates (in the image)
ENV_RDS_CA = "RDS_CA_BUNDLE"  # overrides where the bundle is looked for
RDS_CA_PATH = "/usr/local/share/rds-ca/global-bundle.pem"  # where docker/Dockerfile puts it
RDS_CA_URL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"


def is_rds_host(host: str | None) -> bool:
    return bool(host) and host.strip().rstrip(".").lower().endswith(RDS_HOST_SUFFIXES)


def is_rds_proxy_host(host: str | None) -> bool:
    return is_rds_host(host) and RDS_PROXY_LABEL in f".{host.strip().lower()}"


def rds_ca_path(host: str | None = None) -> str:
    if is_rds_proxy_host(host):
        return os.environ.get(ENV_PROXY_CA) or SYSTEM_CA_PATH
    return os.environ.get(ENV_RDS_CA) or RDS_CA_PATH


def ca_bundle(ssl_ca: str | None, verify: bool, host: str | None) -> str | None:
    """The CA bundle to verify ``host`` against, or None for the driver's default."""
    if ssl_ca:
        return ssl_ca
    if not verify or not is_rds_host(host):
        return None
    path = rds_ca_path(host)
    if not Path(path).is_file():
        raise UserError(
            f"Database host {host} is an RDS endpoint, verified against the RDS CA bundle, but there is "
            f"none at {path} (an image built without internet has none): pass db-ssl-ca (--db-ssl-ca) "
            f"with the bundle from {RDS_CA_URL}, or db-ssl-verify=false to encrypt without verifying"
        )
    return path
