"""infra/optuna-hpo.yaml as the tests read it."""

from __future__ import annotations

import json
from typing import Any

from awscli.customizations.cloudformation.yamlhelper import yaml_parse

from tests.support.services import ROOT

TEMPLATE = ROOT / "infra" / "optuna-hpo.yaml"
DB_HOST = "optuna-hpo-cluster.cluster-abc.us-east-1.rds.amazonaws.com"  # stand-in: DatabaseCluster


def load_template() -> dict[str, Any]:
    """The template as plain dicts and lists, short-form functions (!Ref, !Sub...) in their long
    form: the AWS CLI's parser (`aws cloudformation package` uses it), which gives what cfn-lint's
    decoder gives in a third of the import time; cfn-lint itself runs in the process layer."""
    return json.loads(json.dumps(yaml_parse(TEMPLATE.read_text())))
