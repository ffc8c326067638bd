"""Every IAM policy of a CloudFormation template, through parliament, for every combination of
the template's conditions; exit 1 on any finding.

parliament reads plain JSON policies, and a template's policies are full of ``Ref``,
``Fn::Sub``, ``Fn::If``...: this script resolves them with example values (an account id,
ARNs of the right shape) since no library renders a template without deploying it. Run it with
the tools venv (``make infra-check``): ``build/infra-tools/bin/python infra/check_policies.py``.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from pathlib import Path
from typing import Any

ACCOUNT, REGION, PARTITION = "123456789012", "us-east-1", "aws"
PSEUDO = {
    "AWS::AccountId": ACCOUNT,
    "AWS::Region": REGION,
    "AWS::Partition": PARTITION,
    "AWS::StackName": "optuna-hpo",
    "AWS::URLSuffix": "amazonaws.com",
}
# Example parameter values where a parameter has no default.
PARAMETER_EXAMPLES = {
    "S3PrefixListId": "pl-63a5400a",
    "SourceLocation": "example-source-bucket/optuna/source.zip",
    "ExistingVpcId": "vpc-0123456789abcdef0",
    "ExistingSubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
}


class Renderer:
    """Resolves a template's intrinsic functions with example values, for given conditions.

    ``parameters``: values given at deployment (as strings, lists for CommaDelimitedList); the
    others take their default or an example. ``conditions`` default to those the parameters
    give (:meth:`evaluate`).
    """

    def __init__(
        self,
        template: dict[str, Any],
        conditions: dict[str, bool] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        self.template = template
        self.parameters = parameters or {}
        self.conditions = conditions if conditions is not None else self.evaluate()

    def evaluate(self) -> dict[str, bool]:
        """Every condition of the template for these parameters (Equals, And, Or, Not, Condition)."""
        found: dict[str, bool] = {}

        def value(node: Any) -> Any:
            if isinstance(node, dict) and len(node) == 1:
                ((key, arg),) = node.items()
                if key == "Fn::Equals":
                    return str(value(arg[0])) == str(value(arg[1]))
                if key == "Fn::And":
                    return all(value(a) for a in arg)
                if key == "Fn::Or":
                    return any(value(a) for a in arg)
                if key == "Fn::Not":
                    return not value(arg[0])
                if key == "Condition":
                    return condition(arg)
            return self.render(node)

        def condition(name: str) -> bool:
            if name not in found:
                found[name] = bool(value(self.template["Conditions"][name]))
            return found[name]

        self.conditions = found  # render() may need conditions already evaluated
        for name in self.template.get("Conditions", {}):
            condition(name)
        return found

    def ref(self, name: str) -> Any:
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.parameters:
            return self.parameters[name]
        params = self.template.get("Parameters", {})
        if name in params:
            if name in PARAMETER_EXAMPLES and (
                not params[name].get("Default") or name.startswith("Existing")
            ):
                return PARAMETER_EXAMPLES[name]
            default = params[name].get("Default", "")
            return default.split(",") if params[name]["Type"] == "CommaDelimitedList" else default
        kind = self.template["Resources"][name]["Type"]
        return {
            "AWS::SecretsManager::Secret": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbCdEf",
            "AWS::EC2::VPC": "vpc-0fedcba9876543210",
            "AWS::EC2::Subnet": f"subnet-{abs(hash(name)) % 16**17:017x}",
            "AWS::EC2::SecurityGroup": f"sg-{abs(hash(name)) % 16**17:017x}",
        }.get(kind, f"optuna-hpo-{name.lower()}-1a2b3c")

    def get_att(self, name: str, attribute: str) -> str:
        kind = self.template["Resources"][name]["Type"]
        physical = self.ref(name)
        arns = {
            ("AWS::S3::Bucket", "Arn"): f"arn:aws:s3:::{physical}",
            ("AWS::ECR::Repository", "Arn"): f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{physical}",
            ("AWS::Logs::LogGroup", "Arn"): f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{physical}:*",
            ("AWS::IAM::Role", "Arn"): f"arn:aws:iam::{ACCOUNT}:role/{physical}",
        }
        return arns.get((kind, attribute), f"{physical}.{attribute}")

    def sub(self, text: str, extra: dict[str, Any]) -> str:
        def value(match: re.Match[str]) -> str:
            key = match.group(1)
            if key in extra:
                return str(self.render(extra[key]))
            if "." in key and not key.startswith("AWS::"):
                return self.get_att(*key.split(".", 1))
            return str(self.ref(key))

        return re.sub(r"\$\{([^}!]+)\}", value, text)

    def render(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.render(item) for item in node]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return NO_VALUE if arg == "AWS::NoValue" else self.ref(arg)
            if key == "Fn::GetAtt":
                return self.get_att(*(arg if isinstance(arg, list) else arg.split(".", 1)))
            if key == "Fn::Sub":
                text, extra = (arg, {}) if isinstance(arg, str) else arg
                return self.sub(text, extra)
            if key == "Fn::If":
                name, yes, no = arg
                return self.render(yes if self.conditions[name] else no)
            if key == "Fn::Select":
                index, items = self.render(arg)
                return items[int(index)]
            if key == "Fn::Join":
                sep, items = arg
                return str(self.render(sep)).join(str(i) for i in self.render(items))
            if key == "Fn::Split":
                sep, text = arg
                return str(self.render(text)).split(str(self.render(sep)))
        rendered = {k: self.render(v) for k, v in node.items()}
        return {k: v for k, v in rendered.items() if v is not NO_VALUE}


NO_VALUE = object()


def condition_names(template: dict[str, Any]) -> list[str]:
    return sorted(template.get("Conditions", {}))


def load(path: Path) -> dict[str, Any]:
    # Imported here: cfn-lint takes seconds to import, and the unit tests use only the Renderer.
    from cfnlint.decode import decode

    template, matches = decode(str(path))
    if matches or template is None:
        raise SystemExit(f"{path}: cannot parse: {matches}")
    return template


def policies(template: dict[str, Any], conditions: dict[str, bool]) -> list[tuple[str, dict[str, Any]]]:
    """(name, policy document) of every policy in the template under these conditions."""
    renderer = Renderer(template, conditions)
    found: list[tuple[str, dict[str, Any]]] = []
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        # Trust policies (AssumeRolePolicyDocument) have no Resource: parliament does not read them.
        if "PolicyDocument" in props:
            found.append((f"{name}.PolicyDocument", renderer.render(props["PolicyDocument"])))
        for policy in props.get("Policies", []):
            found.append((f"{name}.{policy['PolicyName']}", renderer.render(policy["PolicyDocument"])))
    return found


def accepted(finding: Any) -> bool:
    """True when infra/parliament.yaml accepts the finding: parliament's ``ignore_locations``
    rule (every key's regex matches the finding's location), written out here because
    parliament's own filter only reads them from JSON nodes, not from its YAML config."""
    for ignore in finding.ignore_locations or []:
        if all(
            any(re.fullmatch(p.lower(), str(finding.location.get(k, "")).lower()) for p in patterns)
            for k, patterns in ignore.items()
        ):
            return True
    return False


def main(argv: list[str]) -> int:
    # Only in the tools venv. parliament's own filter and config format (its --config option).
    import parliament
    from parliament import analyze_policy_string, enhance_finding, override_config

    # As `parliament --include-community-auditors --config infra/parliament.yaml` does.
    override_config(str(Path(parliament.__file__).parent / "community_auditors" / "config_override.yaml"))
    override_config(str(Path(__file__).with_name("parliament.yaml")))
    failures = 0
    for path in map(Path, argv or ["infra/optuna-hpo.yaml"]):
        template = load(path)
        names = condition_names(template)
        seen: dict[str, list[str]] = {}
        for values in itertools.product((True, False), repeat=len(names)):
            conditions = dict(zip(names, values, strict=True))
            for name, doc in policies(template, conditions):
                text = json.dumps(doc, sort_keys=True)
                if text in seen.setdefault(name, []):
                    continue
                seen[name].append(text)
                findings = analyze_policy_string(
                    text, include_community_auditors=True, ignore_private_auditors=True
                ).findings
                for finding in findings:
                    if accepted(enhance_finding(finding)):
                        continue
                    failures += 1
                    print(f"{path}: {name}: {finding.issue} {finding.detail} {finding.location}")
        checked = sum(len(v) for v in seen.values())
        print(f"{path}: {checked} policy variants of {len(seen)} policies checked")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
