"""``tunnel``: a local port forwarded to the study database, through the stack's SSM access
instance (stack parameter ``EnableSsmAccess=true``), for what needs the live study: ``report``
with plots while jobs run, optuna-dashboard, ``status`` from the database.

It runs ``aws ssm start-session --document-name AWS-StartPortForwardingSessionToRemoteHost`` (the
AWS CLI and its Session Manager plugin must be installed) with the instance, the cluster's
endpoint and port from the stack's outputs, and prints the ``--host``/``--db-port`` to give the
other commands. Session Manager authenticates with IAM (``ssm:StartSession`` on the instance and
the document); the instance has no public address and no inbound rule.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

from core.errors import UserError
from launcher.constants import STACK_ACCESS_INSTANCE, STACK_DB_ENDPOINT, STACK_DB_PORT

DOCUMENT = "AWS-StartPortForwardingSessionToRemoteHost"
DEFAULT_LOCAL_PORT = 13306  # not 3306: a local MySQL may hold that
LOCAL_HOST = "127.0.0.1"
PLUGIN = "session-manager-plugin"


@dataclasses.dataclass(frozen=True)
class Tunnel:
    instance_id: str
    db_host: str
    db_port: int
    local_port: int = DEFAULT_LOCAL_PORT
    region: str | None = None
    profile: str | None = None

    def command(self, aws_cli: str = "aws") -> list[str]:
        """The ``aws ssm start-session`` invocation."""
        parameters = {
            "host": [self.db_host],
            "portNumber": [str(self.db_port)],
            "localPortNumber": [str(self.local_port)],
        }
        argv = [
            aws_cli, "ssm", "start-session",
            "--target", self.instance_id,
            "--document-name", DOCUMENT,
            "--parameters", json.dumps(parameters, separators=(",", ":")),
        ]  # fmt: skip
        if self.region:
            argv += ["--region", self.region]
        if self.profile:
            argv += ["--profile", self.profile]
        return argv

    @property
    def options(self) -> list[str]:
        """What the other commands take to read the study through the tunnel."""
        return ["--host", LOCAL_HOST, "--db-port", str(self.local_port)]

    def as_dict(self) -> dict[str, object]:
        return {
            "instance": self.instance_id,
            "database": f"{self.db_host}:{self.db_port}",
            "local_port": self.local_port,
            "command": self.command(),
            "options": self.options,
        }


def from_outputs(
    outputs: dict[str, str], stack: str, local_port: int, region: str | None, profile: str | None
) -> Tunnel:
    """The tunnel of a stack made from infra/optuna-hpo.yaml, from its outputs."""
    instance = outputs.get(STACK_ACCESS_INSTANCE)
    if not instance:
        raise UserError(
            f"Stack '{stack}' has no SSM access instance (output {STACK_ACCESS_INSTANCE}): update it "
            "with EnableSsmAccess=true (docs/infra.md)"
        )
    missing = [key for key in (STACK_DB_ENDPOINT, STACK_DB_PORT) if not outputs.get(key)]
    if missing:
        raise UserError(
            f"Stack '{stack}' has no output {', '.join(missing)}: was it made from infra/optuna-hpo.yaml?"
        )
    try:
        port = int(outputs[STACK_DB_PORT])
    except ValueError:
        raise UserError(f"Stack '{stack}': output {STACK_DB_PORT} is not a port number") from None
    return Tunnel(instance, outputs[STACK_DB_ENDPOINT], port, local_port, region, profile)


def aws_cli() -> str:
    """The AWS CLI: on PATH, or beside this Python (the project's venv has it)."""
    found = shutil.which("aws") or next(
        (str(p) for p in [Path(sys.executable).parent / "aws"] if p.is_file()), None
    )
    if not found:
        raise UserError("tunnel needs the AWS CLI ('aws'): https://docs.aws.amazon.com/cli/")
    if not shutil.which(PLUGIN):
        raise UserError(
            f"tunnel needs the Session Manager plugin ('{PLUGIN}') for the AWS CLI: "
            "https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-working-with-install-plugin.html"
        )
    return found


def run(tunnel: Tunnel) -> int:
    """Start the forwarding in the foreground until it ends (Ctrl-C); return the CLI's exit code."""
    argv = tunnel.command(aws_cli())
    return subprocess.run(argv, check=False).returncode
