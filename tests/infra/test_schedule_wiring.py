"""The snapshot schedule wired into the whole program (under Pulumi mocks): with the committed Pulumi.prod.yaml it is
built on the stack's own VPC, subnet, node security group, route table, bucket and Talos PKI; switched off, none of
it exists. The component's own behaviour is tested in tests/schedule/."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from cryptography import x509

from dr.adapters.talosapi import APID_PORT, TalosCredentials
from dr.core import outputs as out
from dr.core.credentials import certificate_roles
from infra.lambda_package import WHEEL_DIR_CONFIG_KEY, PackageError
from snapshot_lambda import handler as lh
from tests.infra.mocks import (
    ACCOUNT_ID,
    DEPLOYER_ROLE,
    NEWEST_SNAPSHOT_KEY,
    OS_CA_CERT,
    PRIVATE_IP,
    S3_PREFIX_LIST,
    fake_lambda_wheels,
    run_program,
    stack_file_config,
)
from tests.infra.test_stack import is_secret_input, unwrap

# slow: the module's `prod` program run (~4 s) is what most tests read
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

CALLER_IDENTITY = "aws:index/getCallerIdentity:getCallerIdentity"
# Resource types only the schedule creates (security groups and their rules exist in the network too).
SCHEDULE_TYPES = (
    "aws:lambda/function:Function",
    "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig",
    "aws:scheduler/schedule:Schedule",
    "aws:s3/bucketObjectv2:BucketObjectv2",
    "aws:scheduler/scheduleGroup:ScheduleGroup",
    "aws:ec2/vpcEndpoint:VpcEndpoint",
    "aws:iam/role:Role",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:cloudwatch/logGroup:LogGroup",
)


@pytest.fixture(scope="module")
def prod():
    return run_program(stack_file_config())


@pytest.fixture(scope="module")
def off():
    return run_program({**stack_file_config(), "talos-dr:scheduledSnapshots": "false"})


@pytest.fixture(scope="module")
def prod_config():
    return {k.removeprefix("talos-dr:"): v for k, v in stack_file_config().items()}


def node_sg(run):
    return run.mocks.resources["talos-dr-node-sg"]


def test_prod_stack_file_turns_the_schedule_on(prod, prod_config):
    assert prod_config["scheduledSnapshots"] == "true"
    assert prod.stack.schedule is not None
    for typ in SCHEDULE_TYPES:
        assert prod.of_type(typ), f"no {typ} in the prod stack"
    assert len(prod.dynamic("schedule")) == 1


def test_lambda_runs_in_its_own_subnet_against_the_node_and_bucket(prod, prod_config):
    fn = prod.one("aws:lambda/function:Function")
    lambda_sg = prod.mocks.resources["talos-dr-lambda-sg"]
    subnet = prod.mocks.resources["talos-dr-lambda-subnet"]
    assert fn.inputs["vpcConfig"]["subnetIds"] == [subnet.id], prod.urn(fn.name)
    assert subnet.inputs["vpcId"] == prod.one("aws:ec2/vpc:Vpc").id and subnet.inputs["cidrBlock"] == "10.0.255.240/28"
    assert subnet.inputs["availabilityZone"] == prod.mocks.resources["talos-dr-public"].inputs["availabilityZone"]
    assert fn.inputs["vpcConfig"]["securityGroupIds"] == [lambda_sg.id]
    assert lambda_sg.inputs["vpcId"] == prod.one("aws:ec2/vpc:Vpc").id
    env = fn.inputs["environment"]["variables"]
    assert env[lh.ENV_BUCKET] == prod.one("aws:s3/bucket:Bucket").id
    assert env[lh.ENV_NODE] == PRIVATE_IP
    assert env[lh.ENV_CREDENTIAL_KEY] == "credentials/etcd-backup.json"
    assert env[lh.ENV_AGE_RECIPIENTS] == ",".join(json.loads(prod_config.get("ageRecipients", "[]")))
    assert env[lh.ENV_CLUSTER] == prod_config["clusterName"]
    assert env[lh.ENV_PREFIX] == out.DEFAULT_SNAPSHOT_PREFIX


def test_age_recipients_reach_the_lambda():
    import pyrage

    keys = [str(pyrage.x25519.Identity.generate().to_public()) for _ in range(2)]
    run = run_program({**stack_file_config(), "talos-dr:ageRecipients": json.dumps(keys)})
    env = run.one("aws:lambda/function:Function").inputs["environment"]["variables"]
    assert env[lh.ENV_AGE_RECIPIENTS] == ",".join(keys)


def test_schedule_resources_are_its_children_named_after_the_cluster(prod):
    comp = prod.monitor.components["talos-dr:schedule:SnapshotSchedule"]
    assert comp.endswith("::talos-dr")
    for name in ("talos-dr-lambda-sg", "talos-dr-lambda-subnet", "talos-dr-apid-from-lambda", "talos-dr-snapshot",
                 "talos-dr-schedule", "talos-dr-credential-object", "talos-dr-watch"):
        assert prod.options(name)["parent"] == comp, name
    assert prod.options("talos-dr-node-sg")["parent"] == prod.monitor.components["talos-dr:network:Network"]


def test_node_admits_apid_from_the_lambda_only(prod):
    rule = prod.mocks.resources["talos-dr-apid-from-lambda"]
    assert rule.typ == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
    assert rule.inputs["securityGroupId"] == node_sg(prod).id, prod.urn(rule.name)
    assert rule.inputs["referencedSecurityGroupId"] == prod.mocks.resources["talos-dr-lambda-sg"].id
    assert (rule.inputs["ipProtocol"], rule.inputs["fromPort"], rule.inputs["toPort"]) == ("tcp", APID_PORT, APID_PORT)
    assert "cidrIpv4" not in rule.inputs and "cidrIpv6" not in rule.inputs


def test_only_an_s3_gateway_endpoint_on_the_lambdas_own_route_table(prod, prod_config):
    region = prod_config["aws:region"]
    (s3,) = prod.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")  # no Secrets Manager interface endpoint ($7.30/month)
    assert s3.inputs["serviceName"] == f"com.amazonaws.{region}.s3"
    assert s3.inputs["vpcEndpointType"] == "Gateway" and s3.inputs["vpcId"] == prod.one("aws:ec2/vpc:Vpc").id
    lambda_rt = prod.mocks.resources["talos-dr-lambda-rt"]
    assert s3.inputs["routeTableIds"] == [lambda_rt.id], "the node's route table stays unfiltered"
    bucket_arn = f"arn:aws:s3:::{prod.one('aws:s3/bucket:Bucket').id}"
    (stmt,) = json.loads(s3.inputs["policy"])["Statement"]
    assert stmt["Resource"] == [bucket_arn, f"{bucket_arn}/*"], "the endpoint reaches this bucket only"
    to_s3 = prod.mocks.resources["talos-dr-lambda-to-s3"]
    assert to_s3.inputs["prefixListId"] == S3_PREFIX_LIST
    assert not [r for r in prod.mocks.resources.values() if r.typ.startswith("aws:secretsmanager")]


def test_credential_minted_from_the_clusters_os_ca(prod):
    obj = prod.one("aws:s3/bucketObjectv2:BucketObjectv2")
    assert obj.inputs["bucket"] == prod.one("aws:s3/bucket:Bucket").id
    assert obj.inputs["key"] == "credentials/etcd-backup.json" and obj.inputs["serverSideEncryption"] == "AES256"
    assert is_secret_input(obj.inputs["content"]), "the credential must be a Pulumi secret"
    creds = TalosCredentials.from_json(unwrap(obj.inputs["content"]))
    assert creds.ca_pem == OS_CA_CERT
    assert certificate_roles(creds.cert_pem) == ["os:etcd:backup"]
    x509.load_pem_x509_certificate(creds.cert_pem).verify_directly_issued_by(x509.load_pem_x509_certificate(OS_CA_CERT))
    # Written only once the bucket policy that guards it is in place.
    assert prod.urn("talos-dr-etcd-backups-tls-only") in prod.options(obj.name)["dependencies"]


def test_bucket_policy_names_the_lambda_role_and_the_deployer_as_readers(prod):
    bucket_arn = f"arn:aws:s3:::{prod.one('aws:s3/bucket:Bucket').id}"
    policy = json.loads(prod.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    lambda_role = f"arn:aws:iam::{ACCOUNT_ID}:role/talos-dr-lambda-role"
    reads = by_sid["ReadsOnlyByNamedPrincipals"]
    assert reads["Resource"] == [f"{bucket_arn}/*"]
    assert reads["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": sorted([DEPLOYER_ROLE, lambda_role])}}
    cred = by_sid["CredentialOnlyForTheLambda"]
    assert cred["Resource"] == [f"{bucket_arn}/credentials/*"]
    assert cred["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": sorted([DEPLOYER_ROLE, lambda_role])}}
    # The policy waits for the role it names (a deferred output, no cycle).
    assert prod.urn("talos-dr-lambda-role") in prod.options("talos-dr-etcd-backups-tls-only")["dependencies"]


def test_configured_readers_join_the_policy_and_nothing_else_does():
    ops = f"arn:aws:iam::{ACCOUNT_ID}:role/dr-operator"
    run = run_program({**stack_file_config(), "talos-dr:snapshotReaders": json.dumps([ops]),
                       "talos-dr:scheduledSnapshots": "false"})
    by_sid = {s["Sid"]: s for s in json.loads(run.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])["Statement"]}
    assert by_sid["ReadsOnlyByNamedPrincipals"]["Condition"]["ArnNotLike"]["aws:PrincipalArn"] == sorted([DEPLOYER_ROLE, ops])
    # Without the schedule the credential object does not exist, and only the deployer could read one.
    assert by_sid["CredentialOnlyForTheLambda"]["Condition"]["ArnNotLike"]["aws:PrincipalArn"] == [DEPLOYER_ROLE]


def test_schedule_invokes_the_function_at_the_configured_rate(prod, prod_config):
    sched = prod.one("aws:scheduler/schedule:Schedule")
    fn = prod.one("aws:lambda/function:Function")
    assert sched.inputs["scheduleExpression"] == prod_config["snapshotSchedule"], prod.urn(sched.name)
    assert sched.inputs["target"]["arn"] == f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:{fn.name}"
    group = prod.one("aws:scheduler/scheduleGroup:ScheduleGroup")
    assert sched.inputs["groupName"] == group.name
    role = json.loads(prod.mocks.resources["talos-dr-scheduler-role"].inputs["assumeRolePolicy"])
    condition = role["Statement"][0]["Condition"]
    assert condition["StringEquals"] == {"aws:SourceAccount": ACCOUNT_ID}
    group_arn = f"arn:aws:scheduler:us-east-1:{ACCOUNT_ID}:schedule-group/{group.name}"
    assert condition["ArnLike"]["aws:SourceArn"][0] == group_arn
    assert prod.calls(CALLER_IDENTITY), "the account id comes from the caller identity"


def test_proving_snapshot_waits_for_the_cluster_to_answer(prod, prod_config):
    (watch,) = prod.dynamic("schedule")
    # ClusterReady, not the bootstrap: the Bootstrap call returns before etcd runs.
    assert prod.urn("talos-dr-ready") in prod.options(watch.name)["dependencies"]
    assert prod.urn("talos-dr-bootstrap") in prod.options("talos-dr-ready")["dependencies"]
    assert prod.urn("talos-dr-snapshot") in prod.options(watch.name)["dependencies"]
    assert watch.inputs["bucket"] == prod.one("aws:s3/bucket:Bucket").id
    assert watch.inputs["function_name"] == prod.one("aws:lambda/function:Function").name
    assert watch.inputs["region"] == prod_config["aws:region"]
    assert watch.inputs["interval_seconds"] == 3600
    # Failure messages name the group the Lambda really logs to.
    assert watch.inputs["log_group"] == "/talos-dr/talos-dr/snapshots" == prod.one("aws:cloudwatch/logGroup:LogGroup").inputs["name"]
    assert watch.inputs.get("__provider"), "the provider is serialized into state"


def test_schedule_resources_carry_the_stack_tags(prod):
    for typ in ("aws:lambda/function:Function", "aws:s3/bucketObjectv2:BucketObjectv2", "aws:iam/role:Role"):
        for res in prod.of_type(typ):
            assert res.inputs["tags"]["talos-dr/cluster"] == "talos-dr", prod.urn(res.name)


def test_schedule_outputs_exported(prod):
    assert prod.outputs[out.SNAPSHOT_FUNCTION_NAME] == prod.one("aws:lambda/function:Function").name
    assert prod.outputs[out.NEWEST_SNAPSHOT_KEY] == NEWEST_SNAPSHOT_KEY
    assert prod.outputs[out.NEWEST_SNAPSHOT_TIME] == "2026-11-24T02:00:00Z"
    assert prod.outputs[out.BACKUPS_STATUS] == "fresh"
    assert not set(out.SCHEDULE_OUTPUTS) & set(out.ALL_OUTPUTS), "the DR commands' contract stays as it was"


def test_lambda_package_built_offline_with_dr_inside(prod):
    assert prod.lambda_wheel_dirs == [None], "no wheel folder configured: the package falls back to the env/cache"
    code = prod.one("aws:lambda/function:Function").inputs["code"]
    with zipfile.ZipFile(code.path) as z:
        names = set(z.namelist())
    assert {"snapshot_lambda/handler.py", "dr/adapters/talosapi/client.py", "h2/__init__.py", "protobuf/__init__.py"} <= names
    # only what the handler imports: no commands, no sandbox, no deploy-time code
    assert not any(n.startswith(("dr/commands/", "infra/", "sandbox/")) for n in names), names


def test_scheduled_snapshots_off_creates_none_of_it(off, prod):
    assert off.stack.schedule is None
    schedule = prod.monitor.components["talos-dr:schedule:SnapshotSchedule"]
    theirs = {r.name for r in prod.mocks.resources.values() if prod.monitor.options.get(r.name, {}).get("parent") == schedule}
    for typ in SCHEDULE_TYPES:
        assert not [r for r in off.of_type(typ) if r.name in theirs], f"{typ} exists with scheduledSnapshots false"
    assert not off.dynamic("schedule")
    assert "talos-dr-apid-from-lambda" not in off.mocks.resources
    assert not [r for r in off.of_type("aws:ec2/securityGroup:SecurityGroup") if r.name != "talos-dr-node-sg"]
    assert [r.name for r in off.of_type("aws:ec2/subnet:Subnet")] == ["talos-dr-public"]
    assert off.lambda_wheel_dirs == [], "no package is built"
    assert set(off.outputs) == set(out.ALL_OUTPUTS + out.VAULT_OUTPUTS)
    # Everything else is the same stack.
    assert {r.name for r in off.mocks.resources.values()} < {r.name for r in prod.mocks.resources.values()}


def test_wheel_dir_from_config_reaches_the_package_build(tmp_path):
    wheels = fake_lambda_wheels(tmp_path / "wheels")
    run = run_program({**stack_file_config(), f"talos-dr:{WHEEL_DIR_CONFIG_KEY}": str(wheels)})
    assert run.lambda_wheel_dirs == [str(wheels)]


def test_wheel_dir_without_the_wheels_fails_saying_how_to_fill_it(tmp_path):
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    with pytest.raises(PackageError, match=r"pip download .*--platform manylinux2014_x86_64") as info:
        run_program({**stack_file_config(), f"talos-dr:{WHEEL_DIR_CONFIG_KEY}": str(empty)})
    assert str(empty) in str(info.value)


def test_wheel_dir_is_ignored_when_the_schedule_is_off(tmp_path):
    missing = Path(tmp_path / "nowhere")
    run = run_program({**stack_file_config(), "talos-dr:scheduledSnapshots": "false",
                       f"talos-dr:{WHEEL_DIR_CONFIG_KEY}": str(missing)})
    assert run.lambda_wheel_dirs == [] and set(run.outputs) == set(out.ALL_OUTPUTS + out.VAULT_OUTPUTS)
