"""infra/optuna-hpo.yaml as the tests read it."""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.support.services import ROOT

TEMPLATE = ROOT / "infra" / "optuna-hpo.yaml"
DB_HOST = "optuna-hpo-cluster.cluster-abc.us-east-1.rds.amazonaws.com"  # stand-in: DatabaseCluster


class _TemplateLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (!Ref, !Sub, !GetAtt a.b...) turned into their long
    forms. By hand, as the AWS CLI's parser does it: cfn-lint's decoder (which gives the same
    result, tests/process/test_infra_checks.py runs cfn-lint itself) takes seconds to import, and
    importing the AWS CLI sets AWS_DATA_PATH in the test process, which changes how botocore
    reports a missing profile."""


def _short_form(loader: yaml.SafeLoader, tag: str, node: yaml.Node) -> dict[str, Any]:
    name = tag.lstrip("!")
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if name in ("Ref", "Condition"):
        return {name: value}
    if name == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{name}": value}


_TemplateLoader.add_multi_constructor("!", _short_form)


def load_template() -> dict[str, Any]:
    """The template as plain dicts and lists."""
    return json.loads(json.dumps(yaml.load(TEMPLATE.read_text(), Loader=_TemplateLoader)))
