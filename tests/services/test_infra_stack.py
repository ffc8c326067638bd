"""infra/optuna-hpo.yaml deployed on a moto server that enforces IAM.

moto's CloudFormation has no AWS::RDS::DBCluster, AWS::RDS::DBClusterParameterGroup,
AWS::SecretsManager::Secret, ::SecretTargetAttachment, ::RotationSchedule,
AWS::S3::BucketPolicy, AWS::CodeBuild::Project or AWS::EC2::SecurityGroupEgress
(``MOTO_LACKS``, checked against moto below). The test deploys everything else: those
resources, and the Aurora instance that needs the cluster, are left out, and references to them
are replaced by stand-ins (a secret created through Secrets Manager's API, a cluster host name).
"""

from __future__ import annotations

import ast
import json
import re
import uuid
from typing import Any

import boto3
import pytest
from moto.cloudformation.parsing import resource_class_from_type

from entrypoint.constants import PROXY_PORT
from tests.support import services
from tests.support.cli import run_cli
from tests.support.infra import DB_HOST, TEMPLATE, load_template
from tests.support.moto_setup import (
    ADMIN_SETUP_CALLS,
    allow,
    create_secret,
    create_training_job,
    iam_user,
    key_env,
    use_moto,
)

MOTO_LACKS = {
    "AWS::CodeBuild::Project",
    "AWS::EC2::SecurityGroupEgress",
    "AWS::RDS::DBCluster",
    "AWS::RDS::DBClusterParameterGroup",
    "AWS::S3::BucketPolicy",
    "AWS::SecretsManager::RotationSchedule",
    "AWS::SecretsManager::Secret",
    "AWS::SecretsManager::SecretTargetAttachment",
}


@pytest.mark.services
def test_moto_lacks_exactly_the_listed_resource_types():
    """moto's CloudFormation (the library: this layer is where moto is) lacks these types and
    no other, so the stack on moto below leaves out exactly them."""
    kinds = {r["Type"] for r in load_template()["Resources"].values()}
    assert {k for k in kinds if resource_class_from_type(k) is None} == MOTO_LACKS


@pytest.mark.services
def test_the_tests_read_the_template_as_cfn_lint_does():
    """tests/support/infra.py reads the short forms by hand (cfn-lint is slow to import for the
    unit layer): the same document as cfn-lint's decoder, which loads here with moto anyway."""
    from cfnlint.decode import decode

    template, matches = decode(str(TEMPLATE))
    assert not matches and template is not None, matches
    assert json.loads(json.dumps(template)) == load_template()


NEEDS_THE_CLUSTER = {"DatabaseInstance"}  # moto would create a stand-alone aurora-mysql instance


# --- the stack on moto --------------------------------------------------------------------------


def _moto_template(template: dict[str, Any], secret_arn: str, repository: str) -> dict[str, Any]:
    """The template less what moto cannot create, references to it replaced by stand-ins."""
    missing = {name for name, r in template["Resources"].items() if r["Type"] in MOTO_LACKS}
    standins = {
        "DatabaseSecret": secret_arn,
        "DatabaseCluster": "optuna-hpo-cluster",
        "DatabaseCluster.Endpoint.Address": DB_HOST,
        "DatabaseCluster.Endpoint.Port": "3306",
        "ImageBuild": "optuna-hpo-image",
    }

    def sub_text(text: str) -> str:
        def value(m: re.Match[str]) -> str:
            return standins[m.group(1)] if m.group(1).split(".")[0] in missing else m.group(0)

        return re.sub(r"\$\{([^}]+)\}", value, text)

    def replace(node: Any) -> Any:
        if isinstance(node, list):
            return [replace(item) for item in node]
        if not isinstance(node, dict):
            return node
        if list(node) == ["Ref"] and node["Ref"] in missing:
            return standins[node["Ref"]]
        if list(node) == ["Fn::GetAtt"]:
            name, attribute = node["Fn::GetAtt"]
            if name in missing:
                return standins[f"{name}.{attribute}"]
        if list(node) == ["Fn::Sub"]:
            arg = node["Fn::Sub"]
            return {"Fn::Sub": sub_text(arg) if isinstance(arg, str) else [sub_text(arg[0]), replace(arg[1])]}
        return {key: replace(value) for key, value in node.items()}

    left_out = missing | NEEDS_THE_CLUSTER
    resources = {name: replace(r) for name, r in template["Resources"].items() if name not in left_out}
    for resource in resources.values():
        resource.pop("DependsOn", None)
    # moto names a repository from the logical id with capitals, which ECR refuses (AWS lowercases).
    resources["ImageRepository"]["Properties"]["RepositoryName"] = repository
    body = {key: value for key, value in template.items() if key not in ("Transform", "Resources", "Outputs")}
    return {**body, "Resources": resources, "Outputs": replace(template["Outputs"])}


class World:
    """A moto server enforcing IAM (with resource ARNs for Secrets Manager and ECR), an admin."""

    def __init__(self, url: str) -> None:
        self.url = url
        plain = boto3.session.Session(
            region_name=services.REGION, aws_access_key_id="x", aws_secret_access_key="x"
        )
        self.admin_keys = iam_user(plain.client("iam", endpoint_url=url), "admin", allow("*"))
        self.admin = self.session(self.admin_keys)

    def session(self, keys: dict[str, str]) -> boto3.session.Session:
        return boto3.session.Session(region_name=services.REGION, **keys)

    def client(self, session: boto3.session.Session, service: str):
        return session.client(service, endpoint_url=self.url)

    def use_as_admin(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point boto3 in this test (CloudFormation included) at the server, as the admin."""
        use_moto(monkeypatch, self.url, AWS_ENDPOINT_URL_CLOUDFORMATION=self.url, **key_env(self.admin_keys))

    def deploy(self, name: str, secret_doc: dict | None = None, **parameters: str) -> dict[str, str]:
        """Deploy the stack (with stand-ins); return its outputs."""
        secret_arn = create_secret(
            self.client(self.admin, "secretsmanager"),
            f"{name}-db",
            secret_doc or {"username": "optuna", "password": "p", "host": DB_HOST, "port": 3306},
        )
        body = _moto_template(load_template(), secret_arn, f"{name}-image")
        cloudformation = self.client(self.admin, "cloudformation")
        cloudformation.create_stack(
            StackName=name,
            TemplateBody=json.dumps(body),
            Parameters=[
                {"ParameterKey": "S3PrefixListId", "ParameterValue": self.s3_prefix_list()},
                {"ParameterKey": "SourceLocation", "ParameterValue": "https://github.com/OWNER/REPO.git"},
                *({"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()),
            ],
            Capabilities=["CAPABILITY_IAM"],
        )
        stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
        return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}

    def s3_prefix_list(self) -> str:
        """As `make infra` finds it."""
        lists = self.client(self.admin, "ec2").describe_managed_prefix_lists(
            Filters=[{"Name": "prefix-list-name", "Values": [f"com.amazonaws.{services.REGION}.s3"]}]
        )["PrefixLists"]
        return lists[0]["PrefixListId"]

    def role_policy_user(self, role_arn: str) -> boto3.session.Session:
        """A user holding exactly the role's inline policy."""
        iam = self.client(self.admin, "iam")
        role = role_arn.rsplit("/", 1)[1]
        (policy_name,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
        doc = iam.get_role_policy(RoleName=role, PolicyName=policy_name)["PolicyDocument"]
        if isinstance(doc, str) and not doc.startswith('{"'):
            doc = ast.literal_eval(doc)  # moto stores a stack's inline policy as a Python repr
        # ... and keeps an `Fn::If` that chose AWS::NoValue as a None statement.
        doc["Statement"] = [statement for statement in doc["Statement"] if statement is not None]
        return self.session(iam_user(iam, f"u-{uuid.uuid4().hex[:8]}", doc))


@pytest.fixture(scope="module")
def world():
    with services.moto_server(iam_after=ADMIN_SETUP_CALLS, resource_auth=True) as url:
        yield World(url)


@pytest.fixture(scope="module")
def stack(world):
    name = f"optuna-{uuid.uuid4().hex[:6]}"
    return name, world.deploy(name)


@pytest.mark.services
def test_stack_outputs_name_the_stack_resources(world, stack):
    name, out = stack
    ec2 = world.client(world.admin, "ec2")
    subnets = ec2.describe_subnets(SubnetIds=out["SubnetIds"].split(","))["Subnets"]
    assert len(subnets) == 2 and len({s["AvailabilityZone"] for s in subnets}) == 2
    assert {s["VpcId"] for s in subnets} == {out["VpcId"]}
    assert not any(s["MapPublicIpOnLaunch"] for s in subnets)
    vpc_filter = [{"Name": "vpc-id", "Values": [out["VpcId"]]}]
    assert (
        ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [out["VpcId"]]}])[
            "InternetGateways"
        ]
        == []
    )
    assert ec2.describe_nat_gateways(Filter=vpc_filter)["NatGateways"] == []
    endpoints = ec2.describe_vpc_endpoints(Filters=vpc_filter)["VpcEndpoints"]
    by_service = {e["ServiceName"].rsplit(".", 1)[1]: e for e in endpoints}
    assert set(by_service) == {"s3", "secretsmanager"}  # the jobs need no more (see the template)
    assert by_service["s3"]["VpcEndpointType"] == "Gateway"
    assert by_service["secretsmanager"]["VpcEndpointType"] == "Interface"
    assert by_service["secretsmanager"]["PrivateDnsEnabled"]
    assert by_service["secretsmanager"]["SubnetIds"] == out["SubnetIds"].split(",")[:1]  # one zone by default
    routes = ec2.describe_route_tables(Filters=vpc_filter)["RouteTables"]
    assert not any(r.get("GatewayId", "").startswith("igw-") for t in routes for r in t["Routes"])

    groups = {
        g["GroupId"]: g
        for g in ec2.describe_security_groups(
            GroupIds=[out["SecurityGroupId"], out["DatabaseSecurityGroupId"]]
        )["SecurityGroups"]
    }
    jobs, db = groups[out["SecurityGroupId"]], groups[out["DatabaseSecurityGroupId"]]
    # The jobs admit one another on the study proxy's port only (hosts of one job).
    (proxy_rule,) = jobs["IpPermissions"]
    assert (proxy_rule["IpProtocol"], proxy_rule["FromPort"], proxy_rule["ToPort"]) == (
        "tcp",
        PROXY_PORT,
        PROXY_PORT,
    )
    assert proxy_rule["IpRanges"] == [] and proxy_rule.get("Ipv6Ranges", []) == []
    assert [g["GroupId"] for g in proxy_rule["UserIdGroupPairs"]] == [jobs["GroupId"]]
    ingress = db["IpPermissions"]
    assert len(ingress) == 1 and ingress[0]["FromPort"] == 3306 and ingress[0]["IpRanges"] == []
    assert [g["GroupId"] for g in ingress[0]["UserIdGroupPairs"]] == [jobs["GroupId"]]
    # Egress: moto's CloudFormation ignores a group's SecurityGroupEgress (see test_egress_rules).

    s3 = world.client(world.admin, "s3")
    bucket = out["BucketName"]
    assert out["OutputS3Uri"] == f"s3://{bucket}/output"
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    # moto's CloudFormation sets a bucket's encryption and tags only: the rest is checked below.

    ecr = world.client(world.admin, "ecr")
    (repo,) = ecr.describe_repositories(repositoryNames=[f"{name}-image"])["repositories"]
    assert out["ImageRepositoryUri"] == repo["repositoryUri"]

    iam = world.client(world.admin, "iam")
    role = iam.get_role(RoleName=out["ExecutionRoleArn"].rsplit("/", 1)[1])["Role"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "sagemaker.amazonaws.com"}]
    assert trust["Statement"][0]["Condition"] == {
        "StringEquals": {"aws:SourceAccount": role["Arn"].split(":")[4]}
    }
    assert out["DatabaseEndpoint"] == DB_HOST and out["DatabasePort"] == "3306"


@pytest.mark.services
def test_existing_vpc_and_subnets_are_used_and_nothing_is_added_to_them(world):
    ec2 = world.client(world.admin, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"]
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]][:3]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.99.{i}.0/24", AvailabilityZone=zone)["Subnet"]["SubnetId"]
        for i, zone in enumerate(zones)
    ]
    name = f"optuna-{uuid.uuid4().hex[:6]}"
    out = world.deploy(name, ExistingVpcId=vpc, ExistingSubnetIds=",".join(subnets))
    assert out["VpcId"] == vpc and out["SubnetIds"] == ",".join(subnets)
    (group,) = ec2.describe_security_groups(GroupIds=[out["SecurityGroupId"]])["SecurityGroups"]
    assert group["VpcId"] == vpc
    assert ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["VpcEndpoints"] == []
    resources = world.client(world.admin, "cloudformation").list_stack_resources(StackName=name)
    types = {r["ResourceType"] for r in resources["StackResourceSummaries"]}
    assert not types & {"AWS::EC2::VPC", "AWS::EC2::Subnet", "AWS::EC2::VPCEndpoint", "AWS::EC2::RouteTable"}
    iam = world.client(world.admin, "iam")
    role = out["ExecutionRoleArn"].rsplit("/", 1)[1]
    policy = iam.get_role_policy(RoleName=role, PolicyName="training")["PolicyDocument"]
    policy = ast.literal_eval(policy) if isinstance(policy, str) else policy  # moto: a Python repr
    (interfaces,) = [
        st for st in policy["Statement"] if st and st["Sid"] == "NetworkInterfacesInTheStackSubnets"
    ]
    assert len(subnets) == 3  # every one allowed, not only the first two
    assert sorted(interfaces["Condition"]["StringEqualsIfExists"]["ec2:SubnetID"]) == sorted(subnets)


@pytest.mark.services
def test_two_stacks_in_one_account_do_not_collide(world, stack):
    _, first = stack
    second = world.deploy(f"optuna-{uuid.uuid4().hex[:6]}")
    for key in ("VpcId", "SecurityGroupId", "ExecutionRoleArn", "BucketName", "BuildRoleArn", "SubnetIds"):
        assert first[key] != second[key], key


@pytest.mark.services
def test_execution_role_reads_the_stack_secret_and_no_other(world, stack):
    _, out = stack
    other = world.client(world.admin, "secretsmanager").create_secret(
        Name=f"other-{uuid.uuid4().hex[:6]}", SecretString="{}"
    )["ARN"]
    secrets = world.client(world.role_policy_user(out["ExecutionRoleArn"]), "secretsmanager")
    assert (
        json.loads(secrets.get_secret_value(SecretId=out["DatabaseSecretArn"])["SecretString"])["host"]
        == DB_HOST
    )
    with pytest.raises(secrets.exceptions.ClientError, match="AccessDenied"):
        secrets.get_secret_value(SecretId=other)


@pytest.mark.services
def test_build_role_pushes_to_its_repository_and_no_other(world, stack):
    name, out = stack
    other = world.client(world.admin, "ecr").create_repository(repositoryName=f"other-{uuid.uuid4().hex[:6]}")
    ecr = world.client(world.role_policy_user(out["BuildRoleArn"]), "ecr")
    assert ecr.get_authorization_token()["authorizationData"]
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2, "digest": "sha256:" + "a" * 64},
            "layers": [],
        }
    )  # fmt: skip
    ecr.put_image(repositoryName=f"{name}-image", imageManifest=manifest, imageTag="abc123")
    with pytest.raises(ecr.exceptions.ClientError, match="AccessDenied"):
        ecr.put_image(
            repositoryName=other["repository"]["repositoryName"], imageManifest=manifest, imageTag="x"
        )


@pytest.mark.services
def test_launch_with_stack_uses_its_subnets_group_role_and_image(world, stack, monkeypatch):
    name, out = stack
    world.use_as_admin(monkeypatch)
    data = out["DataS3Uri"]
    result = run_cli(
        "launch", "--stack", name, "--study", "infra", "--jobs", "2", "--json",
        "--channel", f"train={data}/train", "--channel", f"test={data}/test",
        "--instance-type", "ml.m5.large", "--job-prefix", f"j{uuid.uuid4().hex[:6]}",
    )  # fmt: skip
    assert result.code == 0, result.err
    sagemaker = world.client(world.admin, "sagemaker")
    for row in result.json()["jobs"]:
        job = sagemaker.describe_training_job(TrainingJobName=row["job"])
        assert job["VpcConfig"] == {
            "Subnets": out["SubnetIds"].split(","),
            "SecurityGroupIds": [out["SecurityGroupId"]],
        }
        assert job["RoleArn"] == out["ExecutionRoleArn"]
        assert job["AlgorithmSpecification"]["TrainingImage"] == f"{out['ImageRepositoryUri']}:latest"
        assert job["HyperParameters"]["db-secret"] == out["DatabaseSecretArn"]
        assert job["OutputDataConfig"]["S3OutputPath"] == out["OutputS3Uri"]

    # An explicit option wins over the stack's output.
    explicit = "arn:aws:iam::123456789012:role/explicit"
    dry = run_cli(
        "launch", "--stack", name, "--study", "infra", "--role", explicit, "--dry-run", "--spot",
        "--channel", f"train={data}/train", "--channel", f"test={data}/test", "--instance-type", "ml.m5.large",
    )  # fmt: skip
    assert dry.code == 0, dry.err
    (request,) = json.loads(dry.out)
    assert request["RoleArn"] == explicit
    assert request["CheckpointConfig"]["S3Uri"] == f"{out['CheckpointS3Uri']}/{request['TrainingJobName']}"

    missing = run_cli("status", "--stack", "no-such-stack", "--study", "infra")
    assert missing.code == 1 and "No stack 'no-such-stack'" in missing.err, missing.err


@pytest.mark.services
def test_status_and_best_with_stack_read_its_secret(world, mysql_db, monkeypatch):
    """A stack whose secret stand-in holds a real MariaDB database: --stack is all they need."""
    name = f"optuna-{uuid.uuid4().hex[:6]}"
    out = world.deploy(name, mysql_db.secret_document(engine="mysql"))
    job = f"job-{uuid.uuid4().hex[:6]}"
    create_training_job(
        world.client(world.admin, "sagemaker"),
        job,
        f"{out['ImageRepositoryUri']}:latest",
        out["ExecutionRoleArn"],
        out["OutputS3Uri"],
    )
    mysql_db.study_with_trials("stacked", [(job, 0.75)])
    world.use_as_admin(monkeypatch)

    status = run_cli("status", "--stack", name, "--study", "stacked", "--json")
    assert status.code == 0, status.err
    assert status.json()["best"]["value"] == 0.75 and status.json()["best"]["job"] == job
    best = run_cli("best", "--stack", name, "--study", "stacked", "--no-verify", "--json")
    assert best.code == 0, best.err
    assert best.json()["job"] == job and best.json()["image"] == f"{out['ImageRepositoryUri']}:latest"


@pytest.mark.services
def test_ssm_access_adds_endpoints_and_an_instance_without_way_in_and_tunnel_uses_them(
    world, stack, monkeypatch
):
    name = f"optuna-{uuid.uuid4().hex[:6]}"
    out = world.deploy(name, EnableSsmAccess="true")
    ec2 = world.client(world.admin, "ec2")
    endpoints = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [out["VpcId"]]}])[
        "VpcEndpoints"
    ]
    by_service = {e["ServiceName"].rsplit(".", 1)[1]: e for e in endpoints}
    assert set(by_service) == {"s3", "secretsmanager", "ssm", "ssmmessages", "ec2messages"}
    for service in ("ssm", "ssmmessages", "ec2messages"):
        assert (
            by_service[service]["VpcEndpointType"] == "Interface" and by_service[service]["PrivateDnsEnabled"]
        )
    (reservation,) = ec2.describe_instances(InstanceIds=[out["AccessInstanceId"]])["Reservations"]
    (instance,) = reservation["Instances"]
    assert "PublicIpAddress" not in instance and instance["SubnetId"] == out["SubnetIds"].split(",")[0]
    # moto's CloudFormation gives the instance no SecurityGroupIds (checked in the template).
    (group,) = ec2.describe_security_groups(Filters=[{"Name": "tag:Name", "Values": [f"{name}-access"]}])[
        "SecurityGroups"
    ]
    group_id = group["GroupId"]
    assert group["IpPermissions"] == []  # no inbound rule
    (db,) = ec2.describe_security_groups(GroupIds=[out["DatabaseSecurityGroupId"]])["SecurityGroups"]
    sources = {
        g["GroupId"] for p in db["IpPermissions"] if p["FromPort"] == 3306 for g in p["UserIdGroupPairs"]
    }
    assert sources == {out["SecurityGroupId"], group_id}

    world.use_as_admin(monkeypatch)
    result = run_cli("tunnel", "--stack", name, "--dry-run", "--json", "--local-port", "23306")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["command"][:5] == ["aws", "ssm", "start-session", "--target", out["AccessInstanceId"]]
    assert json.loads(doc["command"][doc["command"].index("--parameters") + 1]) == {
        "host": [out["DatabaseEndpoint"]], "portNumber": [out["DatabasePort"]], "localPortNumber": ["23306"],
    }  # fmt: skip
    assert doc["options"] == ["--host", "127.0.0.1", "--db-port", "23306"]
    without, _ = stack  # the default: no access instance
    refused = run_cli("tunnel", "--stack", without, "--dry-run")
    assert refused.code == 1 and "update it with EnableSsmAccess=true" in refused.err, refused.err
    assert run_cli("tunnel", "--dry-run").code == 2
