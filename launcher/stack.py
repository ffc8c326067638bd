"""``--stack NAME``: what a command needs, from the outputs of the stack that
``infra/optuna-hpo.yaml`` made (one DescribeStacks). An option given on the command line wins.
"""

from __future__ import annotations

import argparse
from typing import Any

from core.errors import UserError
from launcher import aws
from launcher.constants import (
    STACK_CHECKPOINTS,
    STACK_IMAGE_REPOSITORY,
    STACK_IMAGE_TAG,
    STACK_OUTPUT,
    STACK_ROLE,
    STACK_SECRET,
    STACK_SECURITY_GROUP,
    STACK_SUBNETS,
)


def outputs(session: aws.Session, name: str) -> dict[str, str]:
    """The stack's outputs by key; an unknown stack is a user error naming it."""
    answer = aws.call(
        aws.client(session, "cloudformation"),
        "describe_stacks",
        errors={"ValidationError": f"No stack '{name}' in this region (see --region)"},
        StackName=name,
    )
    return {o["OutputKey"]: o["OutputValue"] for o in answer["Stacks"][0].get("Outputs", [])}


def _need(found: dict[str, str], key: str, stack: str) -> str:
    if not found.get(key):
        raise UserError(f"Stack '{stack}' has no output '{key}': was it made from infra/optuna-hpo.yaml?")
    return found[key]


def apply(args: argparse.Namespace, session: aws.Session) -> None:
    """Fill the options the command has and the user left out from ``--stack``'s outputs."""
    if not getattr(args, "stack", None):
        return
    found = outputs(session, args.stack)

    def fill(dest: str, key: str, convert: Any = str) -> None:
        if hasattr(args, dest) and not getattr(args, dest):
            setattr(args, dest, convert(_need(found, key, args.stack)))

    if not getattr(args, "storage", None):
        fill("db_secret", STACK_SECRET)
    if args.command == "launch":
        fill("image", STACK_IMAGE_REPOSITORY, lambda uri: f"{uri}:{STACK_IMAGE_TAG}")
        fill("role", STACK_ROLE)
        fill("output", STACK_OUTPUT)
        fill("subnet", STACK_SUBNETS, lambda ids: [s for s in ids.split(",") if s])
        fill("security_group", STACK_SECURITY_GROUP, lambda sg: [sg])
        if args.spot:
            fill("checkpoint_s3", STACK_CHECKPOINTS)
