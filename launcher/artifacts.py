"""A job's model.tar.gz on S3 -> the ``model.json`` inside, to check which trial it holds.

The archive is streamed and only ``model.json`` (a few KB) is read; the weights are not.
"""

from __future__ import annotations

import json
import tarfile
from typing import Any

from core.errors import UserError
from entrypoint.constants import MODEL_META_FILE
from launcher import aws
from launcher.constants import MODEL_META_MAX_BYTES


def read_model_meta(s3: Any, uri: str, job_name: str) -> dict[str, Any]:
    """The committed model's metadata; a missing or model-less archive is a user error."""
    bucket, key = aws.split_s3(uri, "The model artifact")
    missing = f"Training job '{job_name}' wrote no model: {uri} does not exist"
    body = aws.call(s3, "get_object", errors={"NoSuchKey": missing, "404": missing}, Bucket=bucket, Key=key)[
        "Body"
    ]
    try:
        with body, tarfile.open(fileobj=body, mode="r|gz") as tar:
            for member in tar:
                if member.name.removeprefix("./") != MODEL_META_FILE or not member.isfile():
                    continue
                if member.size > MODEL_META_MAX_BYTES:
                    raise UserError(f"{uri}: {MODEL_META_FILE} is larger than {MODEL_META_MAX_BYTES} bytes")
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file
                return json.loads(handle.read())
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"{uri} is not a readable model.tar.gz ({exc})") from None
    except ValueError:
        raise UserError(f"{uri}: {MODEL_META_FILE} is not JSON") from None
    raise UserError(f"Training job '{job_name}' wrote no model: {uri} holds no {MODEL_META_FILE}")
