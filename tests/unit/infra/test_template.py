"""infra/optuna-hpo.yaml read as data: IAM, egress and ingress rules, properties moto's
CloudFormation does not apply, scaling, the tunnel command from the stack's outputs."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from entrypoint.constants import PROXY_PORT
from tests.support.infra import DB_HOST, ROOT, TEMPLATE, load_template


@pytest.mark.unit
def test_no_star_action_and_star_resources_only_where_iam_allows_nothing_else():
    text = TEMPLATE.read_text()
    assert not re.search(r"Action:\s*['\"]?\*", text) and '"*"' not in re.findall(r"- ['\"]?\*['\"]?$", text)
    star_resources = [m.start() for m in re.finditer(r'Resource: "\*"', text)]
    # Each `*` resource is ECR's login token, PutMetricData, EC2's Describe calls or
    # DeleteNetworkInterfacePermission (whose resource is optional), with a comment.
    assert len(star_resources) == 5
    for pos in star_resources:
        statement = text[text.rfind("- Sid:", 0, pos) - 200 : pos]
        assert "#" in statement, statement


@pytest.mark.unit
def test_egress_rules():
    """The jobs reach only the database port, S3 and the endpoints; the database and the
    endpoints reach nothing (checked in the template: moto ignores egress rules)."""
    resources = load_template()["Resources"]

    def rules(name: str) -> list[tuple]:
        return [
            (r["IpProtocol"], r.get("FromPort"), r.get("ToPort"), json.dumps({k: v for k, v in r.items() if k.startswith(("Destination", "Cidr"))}))
            for r in resources[name]["Properties"]["SecurityGroupEgress"]
        ]  # fmt: skip

    assert rules("JobsSecurityGroup") == [
        ("tcp", 3306, 3306, json.dumps({"DestinationSecurityGroupId": {"Ref": "DatabaseSecurityGroup"}})),
        ("tcp", 443, 443, json.dumps({"DestinationPrefixListId": {"Ref": "S3PrefixListId"}})),
    ]
    extra = resources["JobsToAwsApis"]["Properties"]
    assert (extra["IpProtocol"], extra["FromPort"], extra["ToPort"]) == ("tcp", 443, 443)
    assert extra["DestinationSecurityGroupId"] == {
        "Fn::If": ["CreateVpc", {"Ref": "EndpointSecurityGroup"}, {"Ref": "AWS::NoValue"}]
    }
    for name in ("DatabaseSecurityGroup", "EndpointSecurityGroup"):
        assert rules(name) == [("-1", None, None, json.dumps({"CidrIp": "127.0.0.1/32"}))]
    egress_resources = [n for n, r in resources.items() if r["Type"] == "AWS::EC2::SecurityGroupEgress"]
    assert sorted(egress_resources) == ["JobsToAwsApis", "JobsToJobs"]
    hosts = resources["JobsToJobs"]["Properties"]
    assert (hosts["IpProtocol"], hosts["FromPort"], hosts["ToPort"]) == ("tcp", PROXY_PORT, PROXY_PORT)
    assert hosts["DestinationSecurityGroupId"] == {"Ref": "JobsSecurityGroup"}


@pytest.mark.unit
def test_the_jobs_admit_one_another_on_the_study_proxy_port_only():
    """Hosts of one job: the first serves the study to the others on PROXY_PORT; no other
    ingress to the jobs (checked in the template here, and on the moto deployment)."""
    resources = load_template()["Resources"]
    ingress = {
        n: r["Properties"]
        for n, r in resources.items()
        if r["Type"] == "AWS::EC2::SecurityGroupIngress"
        and r["Properties"]["GroupId"] == {"Ref": "JobsSecurityGroup"}
    }
    assert list(ingress) == ["JobsFromJobs"]
    rule = ingress["JobsFromJobs"]
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", PROXY_PORT, PROXY_PORT)
    assert rule["SourceSecurityGroupId"] == {"Ref": "JobsSecurityGroup"} and "CidrIp" not in rule
    assert "SecurityGroupIngress" not in resources["JobsSecurityGroup"]["Properties"]


@pytest.mark.unit
def test_bucket_repository_and_database_properties():
    """What moto's CloudFormation does not apply, checked in the template."""
    resources = load_template()["Resources"]
    bucket = resources["Bucket"]["Properties"]
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-checkpoints"]["Prefix"] == "checkpoints/"
    assert rules["expire-checkpoints"]["ExpirationInDays"] == {"Ref": "CheckpointExpirationDays"}
    (deny,) = resources["BucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    repository = resources["ImageRepository"]["Properties"]
    assert repository["ImageScanningConfiguration"] == {"ScanOnPush": True}  # moto keeps CFN's key spelling
    lifecycle = json.loads(repository["LifecyclePolicy"]["LifecyclePolicyText"])
    assert [r["action"]["type"] for r in lifecycle["rules"]] == ["expire", "expire"]

    cluster = resources["DatabaseCluster"]["Properties"]
    assert cluster["Engine"] == "aurora-mysql" and cluster["StorageEncrypted"] is True
    assert "DBClusterIdentifier" not in cluster  # generated: two stacks never collide
    assert "DBSubnetGroupName" not in resources["DatabaseSubnetGroup"]["Properties"]
    params = resources[cluster["DBClusterParameterGroupName"]["Ref"]]["Properties"]["Parameters"]
    assert params == {"require_secure_transport": "ON"}
    generate = resources["DatabaseSecret"]["Properties"]["GenerateSecretString"]
    assert sorted(generate["ExcludeCharacters"]) == sorted('/@" ')
    attachment = resources["DatabaseSecretAttachment"]["Properties"]
    assert attachment["TargetType"] == "AWS::RDS::DBCluster"
    assert attachment["TargetId"] == {"Ref": "DatabaseCluster"}
    build = resources["ImageBuild"]["Properties"]
    assert build["Environment"]["PrivilegedMode"] is True and build["Source"]["BuildSpec"] == "buildspec.yml"
    documented = set(re.findall(r"^#   ([A-Z_]+) ", (ROOT / "buildspec.yml").read_text(), re.M))
    given = {v["Name"] for v in build["Environment"]["EnvironmentVariables"]}
    assert given <= documented and {"AWS_ACCOUNT_ID", "IMAGE_REPO_NAME"} <= given


# --- the template resolved for given parameters (what CloudFormation would send) ----------------


def _renderer(**parameters: Any):
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_policies", ROOT / "infra" / "check_policies.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # The parameters' defaults (the renderer's examples for ExistingVpcId are for the policy check).
    defaults = {"ExistingVpcId": "", "ExistingSubnetIds": [""]}
    return module.Renderer(load_template(), parameters={**defaults, **parameters})


@pytest.mark.unit
@pytest.mark.parametrize(
    "minimum, expected",
    [
        ("0", {"MinCapacity": "0", "MaxCapacity": 4, "SecondsUntilAutoPause": 600}),
        ("0.5", {"MinCapacity": "0.5", "MaxCapacity": 4}),  # RDS refuses SecondsUntilAutoPause here
        ("2", {"MinCapacity": "2", "MaxCapacity": 4}),
    ],
)
def test_scaling_configuration_is_valid_for_every_minimum(minimum, expected):
    renderer = _renderer(MinCapacity=minimum)
    cluster = renderer.render(load_template()["Resources"]["DatabaseCluster"]["Properties"])
    assert cluster["ServerlessV2ScalingConfiguration"] == expected
    provisioned = _renderer(MinCapacity=minimum, DatabaseInstanceClass="db.t4g.medium")
    rendered = provisioned.render(load_template()["Resources"]["DatabaseCluster"]["Properties"])
    assert "ServerlessV2ScalingConfiguration" not in rendered


@pytest.mark.unit
def test_existing_vpc_with_three_subnets_uses_all_three():
    subnets = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1", "subnet-0123456789abcdef2"]
    renderer = _renderer(ExistingVpcId="vpc-0123456789abcdef0", ExistingSubnetIds=subnets)
    assert renderer.conditions["CreateVpc"] is False
    resources = load_template()["Resources"]
    assert renderer.render(resources["DatabaseSubnetGroup"]["Properties"])["SubnetIds"] == subnets
    role = renderer.render(resources["ExecutionRole"]["Properties"])
    statements = {st["Sid"]: st for st in role["Policies"][0]["PolicyDocument"]["Statement"]}
    interfaces = statements["NetworkInterfacesInTheStackSubnets"]
    assert interfaces["Condition"] == {"StringEqualsIfExists": {"ec2:SubnetID": subnets}}
    assert interfaces["Resource"][-1].endswith(":subnet/*")
    assert "Condition" not in statements["DeleteNetworkInterfacePermissions"]
    assert (
        "ec2:DeleteNetworkInterfacePermission" not in statements["ManageTheJobsNetworkInterfaces"]["Action"]
    )
    outputs = renderer.render(load_template()["Outputs"])
    assert outputs["SubnetIds"]["Value"] == ",".join(subnets)
    rotation = renderer.render(resources["DatabaseSecretRotation"]["Properties"])
    assert rotation["HostedRotationLambda"]["VpcSubnetIds"] == ",".join(subnets)
    for name in ("SecretsManagerEndpoint", "SsmEndpoint", "Vpc"):
        assert not renderer.conditions[resources[name]["Condition"]]


@pytest.mark.unit
def test_defaults_one_endpoint_zone_retained_secret_no_minor_upgrades_no_access():
    renderer = _renderer()
    resources = load_template()["Resources"]
    endpoint = renderer.render(resources["SecretsManagerEndpoint"]["Properties"])
    assert len(endpoint["SubnetIds"]) == 1
    two = _renderer(SecretsEndpointZones="2").render(resources["SecretsManagerEndpoint"]["Properties"])
    assert len(two["SubnetIds"]) == 2
    assert "LogsEndpoint" not in resources
    assert resources["DatabaseSecret"]["DeletionPolicy"] == "Retain"
    assert resources["DatabaseInstance"]["Properties"]["AutoMinorVersionUpgrade"] is False
    access = [n for n, r in resources.items() if r.get("Condition") in ("SsmAccess", "SsmEndpoints")]
    assert not any(renderer.conditions[resources[n]["Condition"]] for n in access) and len(access) >= 8
    on = _renderer(EnableSsmAccess="true")
    assert all(on.conditions[resources[n]["Condition"]] for n in access)
    instance = on.render(resources["AccessInstance"]["Properties"])
    assert instance["SecurityGroupIds"] == [on.ref("AccessSecurityGroup")]
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    group = on.render(resources["AccessSecurityGroup"]["Properties"])
    assert "SecurityGroupIngress" not in group
    assert [r["ToPort"] for r in group["SecurityGroupEgress"]] == [3306, 443]


@pytest.mark.unit
def test_tunnel_command_from_stack_outputs():
    from launcher import tunnel

    t = tunnel.from_outputs(
        {"AccessInstanceId": "i-0abc", "DatabaseEndpoint": DB_HOST, "DatabasePort": "3306"},
        "optuna-hpo",
        13306,
        "eu-west-1",
        "dev",
    )
    assert t.command() == [
        "aws", "ssm", "start-session", "--target", "i-0abc",
        "--document-name", "AWS-StartPortForwardingSessionToRemoteHost",
        "--parameters", json.dumps({"host": [DB_HOST], "portNumber": ["3306"], "localPortNumber": ["13306"]}, separators=(",", ":")),
        "--region", "eu-west-1", "--profile", "dev",
    ]  # fmt: skip
    assert t.options == ["--host", "127.0.0.1", "--db-port", "13306"]
    with pytest.raises(Exception, match="no SSM access instance.*EnableSsmAccess=true"):
        tunnel.from_outputs({"DatabaseEndpoint": DB_HOST, "DatabasePort": "3306"}, "s", 1, None, None)
