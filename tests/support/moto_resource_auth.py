"""A moto server whose IAM enforcement also checks the Resource of Secrets Manager and ECR calls.

moto 5 evaluates a policy's Resource only for S3, SQS, IAM roles and STS; every other call is
checked against Resource "*", so a policy that names one secret (as least privilege does)
would be refused that secret too, and "this role reads its secret and no other" could not be
tested. This adds what real IAM does for the two services the stack's roles are limited on:
the ARN of the secret (``SecretId``) or repository (``repositoryName``) a call names. Calls
without one (ListSecrets, GetAuthorizationToken) stay on "*", as in IAM. No library does this,
hence this small patch; run as ``python -m tests.support.moto_resource_auth -H HOST -p PORT``.
"""

from __future__ import annotations

import sys

from moto.ecr.responses import ECRResponse
from moto.secretsmanager.exceptions import SecretNotFoundException
from moto.secretsmanager.responses import SecretsManagerResponse
from moto.server import main


def _secret_arn(self: SecretsManagerResponse) -> str:
    secret_id = self._get_param("SecretId")
    if not secret_id:
        return "*"
    try:
        return self.backend.describe_secret(secret_id).arn
    except SecretNotFoundException:
        return "*"  # the call then answers ResourceNotFoundException, as AWS does when allowed


def _repository_arn(self: ECRResponse) -> str:
    name = self._get_param("repositoryName")
    if not name:
        return "*"
    account = self._get_param("registryId") or self.current_account
    return f"arn:aws:ecr:{self.region}:{account}:repository/{name}"


SecretsManagerResponse._determine_resource = _secret_arn  # type: ignore[attr-defined]
ECRResponse._determine_resource = _repository_arn  # type: ignore[attr-defined]

if __name__ == "__main__":
    main(sys.argv[1:])
