"""A database password rotated as Secrets Manager's rotation does it: in the database, in the
secret (moto), and every connection of the old password ended."""

from __future__ import annotations

import contextlib
import json

import boto3
import mysql.connector

from tests.support import services


def rotate_password(db: services.MySqlDatabase, new_password: str) -> None:
    """Change the user's password in the database and end every connection it has."""
    root = services.mariadb_root(port=db.port)
    try:
        cur = root.cursor()
        cur.execute(f"ALTER USER '{db.user}'@'%' IDENTIFIED BY %s", (new_password,))
        cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (db.user,))
        for (connection_id,) in cur.fetchall():
            with contextlib.suppress(mysql.connector.Error):  # it may have ended meanwhile
                cur.execute(f"KILL {int(connection_id)}")
    finally:
        root.close()
    db.password = new_password


def put_password(secret: str, db: services.MySqlDatabase, password: str, stage: str | None = None) -> None:
    """Write the database's credentials with this password to the secret (in the given stage)."""
    client = boto3.client("secretsmanager", region_name=services.REGION)
    body = json.dumps({**db.credentials(), "password": password})
    client.put_secret_value(
        SecretId=secret, SecretString=body, **({"VersionStages": [stage]} if stage else {})
    )
