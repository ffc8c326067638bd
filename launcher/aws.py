"""boto3 calls whose errors a user can act on: a missing permission names the IAM action.

Everything AWS answers becomes a :class:`UserError` (exit 1, one line); a bug stays a traceback.

boto3 is imported at a command's first AWS call (:class:`Session`), not with the CLI: importing it
takes about 0.6 s, which ``status`` on a study given by --storage or --host never needs.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from core.errors import UserError
from launcher.constants import S3_SCHEME

ACCESS_DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})
BAD_CREDENTIALS_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
    }
)
# Creating dozens of jobs at once meets SageMaker's request rate limits: retry throttling longer.
CLIENT_RETRIES = {"mode": "standard", "max_attempts": 10}
# The environment variables that name a profile (botocore's): with one, the session is made at once.
PROFILE_VARIABLES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE")
NO_REGION = "No AWS region: pass --region or set AWS_DEFAULT_REGION"

if TYPE_CHECKING:
    import boto3
    import botocore.config
    import botocore.exceptions


class AwsError(UserError):
    """AWS refused a call; ``code`` is its error code (e.g. ``ValidationException``)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class Session:
    """The command's one AWS session, passed down to every call (the secret's read included).

    The boto3 session behind it is made at its first use; with a profile named (--profile or
    AWS_PROFILE), at once, so that a missing profile is the command's first error as before.
    """

    def __init__(self, region: str | None, profile: str | None) -> None:
        self._region, self._profile = region, profile
        if profile or any(os.environ.get(name) for name in PROFILE_VARIABLES):
            _ = self.boto

    @functools.cached_property
    def boto(self) -> boto3.session.Session:
        import boto3  # here: see the module's docstring
        import botocore.exceptions

        try:
            return boto3.session.Session(region_name=self._region, profile_name=self._profile)
        except botocore.exceptions.ProfileNotFound as exc:
            raise UserError(str(exc)) from None

    @property
    def region_name(self) -> str | None:
        return self.boto.region_name

    def client(self, service: str, **kwargs: Any) -> Any:
        import botocore.exceptions

        try:
            return self.boto.client(service, **kwargs)
        except botocore.exceptions.ProfileNotFound as exc:  # with AWS_DATA_PATH set it comes here
            raise UserError(str(exc)) from None


def session(region: str | None, profile: str | None) -> Session:
    """The one session of a command (see :class:`Session`)."""
    return Session(region, profile)


@functools.cache
def _client_config() -> botocore.config.Config:
    import botocore.config

    return botocore.config.Config(retries=CLIENT_RETRIES)


def client(session: Session | boto3.session.Session, service: str) -> Any:
    """A client of the command's session (endpoints follow AWS_ENDPOINT_URL_<SERVICE>)."""
    import botocore.exceptions

    try:
        return session.client(service, config=_client_config())
    except botocore.exceptions.NoRegionError:
        raise UserError(NO_REGION) from None


def iam_action(client: Any, operation: str) -> str:
    """``service:Action`` as IAM policies spell it, e.g. ``sagemaker:CreateTrainingJob``."""
    return f"{client.meta.service_model.signing_name}:{operation}"


def error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def _status(exc: botocore.exceptions.ClientError) -> int | None:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _message(exc: botocore.exceptions.ClientError) -> str:
    text = " ".join(str(exc.response.get("Error", {}).get("Message", "")).split())
    return "" if text.startswith("<") else text  # some endpoints answer an XML page: not worth showing


def explain(client: Any, exc: botocore.exceptions.ClientError) -> str:
    """One line for a ClientError: which action, and what to check."""
    action = iam_action(client, exc.operation_name)
    code, message = error_code(exc), _message(exc)
    if code in BAD_CREDENTIALS_CODES:
        return f"AWS refused the credentials for {action} ({code}): check --profile or the AWS_* variables"
    if code in ACCESS_DENIED_CODES or (_status(exc) == 403 and code in ("403", "Forbidden", "Unknown")):
        return f"Not allowed to {action}" + (f": {message}" if message else "")
    return f"{action} failed ({code})" + (f": {message}" if message else "")


def call(client: Any, method: str, errors: Mapping[str, str] | None = None, **kwargs: Any) -> dict:
    """``client.<method>(**kwargs)``; ``errors`` maps an error code to the message to raise."""
    import botocore.exceptions  # loaded with the client already

    try:
        return getattr(client, method)(**kwargs)
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc)
        raise AwsError(errors[code] if errors and code in errors else explain(client, exc), code) from None
    except botocore.exceptions.NoRegionError:
        raise UserError(NO_REGION) from None
    except botocore.exceptions.NoCredentialsError:
        raise UserError("No AWS credentials: pass --profile or set the AWS_* variables") from None
    except botocore.exceptions.BotoCoreError as exc:
        action = iam_action(client, client.meta.method_to_api_mapping[method])
        raise UserError(f"Cannot call {action}: {exc}") from None


def split_s3(uri: str, what: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); anything else is a user error naming ``what``."""
    if not uri.startswith(S3_SCHEME) or not uri[len(S3_SCHEME) :].split("/", 1)[0]:
        raise UserError(f"{what} must be an s3://bucket/prefix URI, not '{uri}'")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    return bucket, key
