"""Secrets Manager -> database credentials.

Accepts the secret that RDS and Aurora create (``username``, ``password``, ``host``,
``port``, ``dbname``, ``engine``) and the AWS sample's ``{"username", "password"}``. The
password only ever lives in :class:`DbCredentials` (hidden from its repr) and is handed to
the database driver as a connect argument, never placed in a URL, a log line or an error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable

from core.engines import SECRET_ENGINES
from core.errors import UserError

logger = logging.getLogger(__name__)
# Secrets Manager's staging labels: the live version, and the one a rotation is putting in place
# (AWS's rotation functions set it in the database before they make it AWSCURRENT).
CURRENT_STAGE = "AWSCURRENT"
PENDING_STAGE = "AWSPENDING"
# A failed connect that may be a refused password or an outage (PostgreSQL tells neither): the
# secret is read again at most this often while connects keep failing, so an outage's retries
# do not call Secrets Manager at every attempt; a rotation during such an outage is found
# within this plus one retry backoff (at most 15 s) of its first refusal.
UNSURE_REREAD_S = 30.0

# Secrets Manager error codes -> what the user should check.
_ERROR_HINTS = {
    "ResourceNotFoundException": "does not exist in this region",
    "AccessDeniedException": "cannot be read: the training role lacks secretsmanager:GetSecretValue on it",
    "AccessDenied": "cannot be read: the training role lacks secretsmanager:GetSecretValue on it",
    "DecryptionFailure": "cannot be decrypted: the training role lacks kms:Decrypt on its key",
    "InvalidRequestException": "cannot be read now (is it scheduled for deletion?)",
}


@dataclasses.dataclass(frozen=True)
class DbCredentials:
    username: str
    password: str = dataclasses.field(repr=False)
    host: str | None = None
    port: int | None = None
    dbname: str | None = None
    engine: str | None = None


def parse_secret(secret_id: str, secret_string: str | None) -> DbCredentials:
    """Validate a secret's JSON; errors name the secret and the problem, never the content."""
    try:
        doc = json.loads(secret_string or "")
    except (ValueError, RecursionError):
        raise UserError(
            f"Secret '{secret_id}' is not JSON: store it as "
            '{"username": ..., "password": ...} (the format RDS creates)'
        ) from None
    if not isinstance(doc, dict):
        raise UserError(f"Secret '{secret_id}' must be a JSON object")
    missing = [key for key in ("username", "password") if not isinstance(doc.get(key), str) or not doc[key]]
    if missing:
        raise UserError(f"Secret '{secret_id}' lacks {' and '.join(repr(k) for k in missing)}")
    port = doc.get("port")
    try:
        port = int(port) if port not in (None, "") else None
    except (TypeError, ValueError):
        raise UserError(f"Secret '{secret_id}' has a 'port' that is not a number") from None
    engine = doc.get("engine")
    if engine is not None and str(engine).lower() not in SECRET_ENGINES:
        raise UserError(
            f"Secret '{secret_id}' names engine '{engine}'; supported: {', '.join(sorted(SECRET_ENGINES))}"
        )
    return DbCredentials(
        username=doc["username"],
        password=doc["password"],
        host=doc.get("host") or None,
        port=port,
        dbname=doc.get("dbname") or doc.get("database") or None,
        engine=SECRET_ENGINES[str(engine).lower()] if engine is not None else None,
    )


# Secrets Manager is also read while a job runs (a refused password after a rotation), with a
# database connection waiting on it: bounded like a database round trip, not boto3's 60 s
# time-outs times its retries. Built at the first read: a job without a secret loads no botocore.
CLIENT_CONFIG_ARGS = {
    "connect_timeout": 5,
    "read_timeout": 10,
    "retries": {"max_attempts": 3, "mode": "standard"},
}


def fetch(
    secret_id: str, region_name: str | None, caller: str = "the training role", stage: str | None = None
) -> DbCredentials:
    """Read the secret with boto3 (endpoint overridable by AWS_ENDPOINT_URL_SECRETS_MANAGER).

    ``caller`` names who lacks a permission in the error (the training role, or "you").
    A fresh session each call: credentials are resolved now, not cached from earlier.
    """
    import boto3  # here: a job without a secret never loads boto3 (0.7 s of its start)
    import botocore.config
    import botocore.exceptions

    try:
        client = boto3.session.Session().client(
            "secretsmanager", region_name=region_name, config=botocore.config.Config(**CLIENT_CONFIG_ARGS)
        )
        response = client.get_secret_value(SecretId=secret_id, **({"VersionStage": stage} if stage else {}))
    except botocore.exceptions.NoRegionError:
        raise UserError(
            f"No AWS region for secret '{secret_id}': set the 'region-name' hyperparameter"
        ) from None
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "Unknown")
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 403:
            code = "AccessDenied"  # some endpoints answer a bare 403 without an error code
        hint = _ERROR_HINTS.get(code, f"cannot be read ({code})").format(caller=caller)
        raise UserError(f"Secret '{secret_id}' {hint}") from None
    except botocore.exceptions.NoCredentialsError:
        raise UserError(f"No AWS credentials to read secret '{secret_id}'") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise UserError(f"Cannot reach Secrets Manager for secret '{secret_id}': {exc}") from None
    if response.get("SecretString") is None and response.get("SecretBinary") is not None:
        raise UserError(
            f"Secret '{secret_id}' holds a binary value (SecretBinary): store the credentials as a "
            'secret string, {"username": ..., "password": ...} (the format RDS creates)'
        )
    return parse_secret(secret_id, response.get("SecretString"))


class LivePassword:
    """A secret's password that follows its rotation: read again when the database refuses it.

    ``read(stage)`` reads the secret's version with that staging label (None: AWSCURRENT). The
    first password is the one the job started with. After the database refused the password in
    use, :meth:`reread` reads AWSCURRENT again and, if it is unchanged, AWSPENDING (a rotation
    between changing the database and promoting the new version): one read per refusal, so a
    wrong password costs one or two calls to Secrets Manager, not a loop. ``on_new`` is told
    each new password (to keep it out of the logs). Thread-safe: the pool's connections and
    the heartbeat thread may meet a refusal at once.
    """

    def __init__(
        self,
        secret_id: str,
        password: str,
        read: Callable[[str | None], DbCredentials],
        on_new: Callable[[str], object] = lambda password: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.secret_id = secret_id
        self._value = password
        self._read, self._on_new = read, on_new
        self._lock = threading.Lock()
        self._clock = clock
        self._unsure_read_at: float | None = None
        self._unsure_found: list[str] = []  # what that read found

    @property
    def value(self) -> str:
        return self._value

    def candidates(self, refused: str, unsure: bool = False) -> list[str]:
        """The passwords worth trying after ``refused`` was refused: the one another thread has
        already read, else those of a fresh read (current, then pending), without ``refused``.
        ``unsure``: the connect failed in a way that may be a refusal or an outage (PostgreSQL
        gives neither a code): the secret is read at most once per ``UNSURE_REREAD_S`` of an
        outage (between, the passwords that read found), and again at once after a connect
        with the password in use succeeded (:meth:`connected`)."""
        with self._lock:
            if self._value != refused:
                return [self._value]
            if unsure:
                now = self._clock()
                if self._unsure_read_at is not None and now - self._unsure_read_at < UNSURE_REREAD_S:
                    return [password for password in self._unsure_found if password != refused]
                self._unsure_read_at = now
            found: list[str] = []
            for stage in (None, PENDING_STAGE):
                try:
                    password = self._read(stage).password
                except UserError as exc:
                    if stage is None:  # unreadable now (access, network): AWSPENDING would be too
                        logger.warning("Secret '%s' could not be read again: %s", self.secret_id, exc)
                        break
                    continue  # no pending version is the common case
                if password != refused and password not in found:
                    found.append(password)
                    if stage is None:
                        break  # AWSCURRENT moved on: the rotation is complete
            for password in found:
                self._on_new(password)
            if unsure:
                self._unsure_found = found
            return found

    def connected(self) -> None:
        """A connect with the password in use succeeded: an outage is over, so the next unsure
        failure may read the secret at once (a rotation that follows it is found without waiting
        out the outage's ``UNSURE_REREAD_S``)."""
        if self._unsure_read_at is not None:
            with self._lock:
                self._unsure_read_at, self._unsure_found = None, []

    def accept(self, password: str) -> None:
        """``password`` was accepted by the database: use it from now on."""
        with self._lock:
            if password != self._value:
                self._value = password
                logger.warning(
                    "The database refused the password of secret '%s'; the secret was read again "
                    "and its new password is in use (rotated)",
                    self.secret_id,
                )
