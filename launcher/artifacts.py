"""A job's model.tar.gz on S3 -> the record in its ``model.json``, to check which trial it holds.

The archive is streamed and only ``model.json`` (a few KB) is read, and checked by
core/artifact.py as serving checks it; the weights are not read.
"""

from __future__ import annotations

import tarfile
from typing import Any

from core.artifact import META_FILE, ArtifactError, ModelRecord
from core.errors import UserError
from launcher import aws
from launcher.constants import MODEL_META_MAX_BYTES


def read_model_record(s3: Any, uri: str, job_name: str) -> ModelRecord:
    """The committed model's record; a missing, model-less or invalid archive is a user error."""
    bucket, key = aws.split_s3(uri, "The model artifact")
    missing = f"Training job '{job_name}' wrote no model: {uri} does not exist"
    body = aws.call(s3, "get_object", errors={"NoSuchKey": missing, "404": missing}, Bucket=bucket, Key=key)[
        "Body"
    ]
    try:
        with body, tarfile.open(fileobj=body, mode="r|gz") as tar:
            for member in tar:
                if member.name.removeprefix("./") != META_FILE or not member.isfile():
                    continue
                if member.size > MODEL_META_MAX_BYTES:
                    raise UserError(f"{uri}: {META_FILE} is larger than {MODEL_META_MAX_BYTES} bytes")
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file
                text = handle.read()
                break
            else:
                raise UserError(f"Training job '{job_name}' wrote no model: {uri} holds no {META_FILE}")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"{uri} is not a readable model.tar.gz ({exc})") from None
    try:
        return ModelRecord.from_json(text, f"{uri}: {META_FILE}")
    except ArtifactError as exc:
        raise UserError(str(exc)) from None
