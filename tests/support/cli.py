"""Run the `sagemaker-optuna` CLI in the test process, and the arguments tests launch with."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json

from launcher import cli
from tests.support import services

PASSWORD = services.HARD_PASSWORD
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sagemaker-optuna-chainer:test"
ROLE = "arn:aws:iam::123456789012:role/optuna-training"
STUDY = "digits launcher/1"  # a space and a slash: job names must still be valid


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


def run_cli(*argv: str) -> Result:
    """Run the CLI in this process; no output may ever contain the database password."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.run(list(argv))
        except SystemExit as exc:  # argparse: usage errors
            code = exc.code
    result = Result(code, out.getvalue(), err.getvalue())
    for fragment in [PASSWORD] + [p for p in PASSWORD.split() if len(p) >= 5]:
        assert fragment not in result.out + result.err
    return result


def launch_args(bucket: str, secret: str, *extra: str) -> list[str]:
    """`launch` of the test study with our image and role, data and output in `bucket`."""
    return [
        "launch",
        "--study", STUDY,
        "--db-secret", secret,
        "--image", IMAGE,
        "--role", ROLE,
        "--output", f"s3://{bucket}/output",
        "--channel", f"train=s3://{bucket}/data/train",
        "--channel", f"test=s3://{bucket}/data/test",
        "--instance-type", "ml.m5.large",
        *extra,
    ]  # fmt: skip
