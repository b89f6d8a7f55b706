"""infra/schedule.py under Pulumi mocks: the resources exist and are wired with least privilege."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pulumi
import pytest
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import settings

from dr.adapters.talosapi import TalosCredentials
from dr.core.credentials import certificate_roles, new_ca
from dr.core.outputs import DEFAULT_STACK, PROJECT_NAME
from snapshot_lambda import handler as lh

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
BUCKET_ARN = "arn:aws:s3:::talos-dr-etcd-backups-a1b2c3d"
NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


def unwrap(v):
    return v["value"] if isinstance(v, dict) and v.get(SIG_KEY) == SECRET_SIG else v


def is_secret(v) -> bool:
    return isinstance(v, dict) and v.get(SIG_KEY) == SECRET_SIG


class Mocks(pulumi.runtime.Mocks):
    """Echo inputs; add what AWS would compute, keyed by type token."""

    def __init__(self):
        self.resources: dict[str, tuple[str, dict]] = {}

    def new_resource(self, args):
        outs = dict(args.inputs)
        rid = f"{args.name}-id"
        typ = args.typ
        if typ == "aws:scheduler/scheduleGroup:ScheduleGroup":
            outs.update(arn=f"arn:aws:scheduler:us-east-1:123456789012:schedule-group/{args.name}", name=args.name)
        elif typ in ("aws:iam/role:Role", "aws:lambda/function:Function", "aws:scheduler/schedule:Schedule",
                     "aws:sqs/queue:Queue"):
            service = typ.split(":")[1].split("/")[0]
            outs.update(arn=f"arn:aws:{service}:us-east-1:123456789012:{args.name}", name=args.name)
        if typ == "aws:ec2/vpcEndpoint:VpcEndpoint":
            outs.update(prefixListId="pl-63a5400a")
        self.resources[args.name] = (typ, dict(args.inputs))
        return rid, outs

    def call(self, args):
        return {}


def of_type(mocks, typ):
    return {n: i for n, (t, i) in mocks.resources.items() if t == typ}


class DepMonitor(pulumi_mocks.MockMonitor):
    """Keeps each resource's dependencies (URNs), which Mocks never sees."""

    def __init__(self, mocks):
        super().__init__(mocks)
        self.deps: dict[str, list[str]] = {}
        self.urns: dict[str, str] = {}

    def RegisterResource(self, request):  # noqa: N802 (gRPC method name)
        response = super().RegisterResource(request)
        self.deps[request.name] = list(request.dependencies)
        self.urns[request.name] = response.urn
        return response


def run_component(ca, **overrides):
    settings.reset_options(project=PROJECT_NAME, stack=DEFAULT_STACK, preview=False)
    mocks = Mocks()
    mocks.monitor = DepMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT_NAME, stack=DEFAULT_STACK, preview=False, monitor=mocks.monitor)
    from infra.schedule import SnapshotSchedule, SnapshotScheduleArgs

    b64 = {"cert": base64.b64encode(ca[0]).decode(), "key": base64.b64encode(ca[1]).decode()}
    args = dict(
        vpc_id="vpc-1", availability_zone="us-east-1a", lambda_subnet_cidr="10.0.255.240/28",
        node_security_group_id="sg-node",
        bucket_name="talos-dr-etcd-backups-a1b2c3d", bucket_arn=BUCKET_ARN, node_private_ip="10.0.1.10",
        machine_secrets=pulumi.Output.secret({"certs": {"os": b64}}), cluster_name="talos-dr", region="us-east-1",
        schedule_expression="rate(1 hour)", now=NOW, account_id="123456789012",
        age_recipients=("age1qqqq", "age1pppp"),
        code=pulumi.AssetArchive({"snapshot_lambda/handler.py": pulumi.StringAsset("def handler(e, c): pass\n")}),
    )
    args.update(overrides)
    holder = {}

    @pulumi.runtime.test
    def program():
        bootstrap = pulumi.CustomResource("test:index:Bootstrap", "bootstrap", {})
        comp = SnapshotSchedule("talos-dr", SnapshotScheduleArgs(**args, ready=[bootstrap]))
        holder["c"] = comp
        return pulumi.Output.all(comp.urn, comp.function_arn, comp.role_arn, comp.credential_not_after).apply(
            lambda a: holder.__setitem__("outs", a))

    program()
    return mocks, holder["c"]


@pytest.fixture(scope="module")
def ca():
    return new_ca("talos")


@pytest.fixture(scope="module")
def run(ca):
    return run_component(ca)[0]


def test_import_creates_nothing():
    """Importing the component and the dynamic provider's module (as the provider process does) registers nothing."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import pulumi\n"
        "from tests.infra.test_schedule_component import Mocks\n"
        "m = Mocks()\n"
        "pulumi.runtime.set_mocks(m, project='p', stack='s', preview=False)\n"
        "import infra.schedule, infra.providers.backup_check, snapshot_lambda.handler, dr.core.credentials\n"
        "print(len(m.resources))\n"
    )
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert r.returncode == 0 and r.stdout.strip() == "0", r.stderr


GROUP_ARN = "arn:aws:scheduler:us-east-1:123456789012:schedule-group/talos-dr-schedules"


def test_schedule_invokes_the_function_with_its_own_role(run):
    (sched,) = of_type(run, "aws:scheduler/schedule:Schedule").values()
    fn_arn = "arn:aws:lambda:us-east-1:123456789012:talos-dr-snapshot"
    assert sched["scheduleExpression"] == "rate(1 hour)"
    assert sched["flexibleTimeWindow"] == {"mode": "OFF"}
    assert sched["groupName"] == "talos-dr-schedules"
    assert sched["target"]["arn"] == fn_arn
    assert sched["target"]["roleArn"] == "arn:aws:iam:us-east-1:123456789012:talos-dr-scheduler-role"
    pol = json.loads(run.resources["talos-dr-scheduler-policy"][1]["policy"])
    (stmt,) = pol["Statement"]
    assert stmt["Action"] == ["lambda:InvokeFunction"] and stmt["Resource"] == [fn_arn, f"{fn_arn}:*"]
    # Scheduler retries delivery only, for a minute; Lambda retries the function's failures
    assert sched["target"]["retryPolicy"] == {"maximumRetryAttempts": 2, "maximumEventAgeInSeconds": 60}
    (async_cfg,) = of_type(run, "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig").values()
    assert async_cfg["functionName"] == "talos-dr-snapshot" and async_cfg["maximumRetryAttempts"] == 2
    # 60 s delivery + 2640 s of retries + a 900 s run = 3600 s: the last retry ends before the next hourly run
    assert async_cfg["maximumEventAgeInSeconds"] == 3600 - 900 - 60
    queue_arn = "arn:aws:sqs:us-east-1:123456789012:talos-dr-failed-runs-queue"
    assert async_cfg["destinationConfig"] == {"onFailure": {"destination": queue_arn}}
    trust = json.loads(run.resources["talos-dr-scheduler-role"][1]["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "scheduler.amazonaws.com"}
    # Bound to this account and to this stack's own schedule group (or a schedule in it).
    assert trust["Statement"][0]["Condition"] == {
        "StringEquals": {"aws:SourceAccount": "123456789012"},
        "ArnLike": {"aws:SourceArn": [GROUP_ARN, "arn:aws:scheduler:us-east-1:123456789012:schedule/talos-dr-schedules/*"]},
    }


def test_lambda_runs_in_its_own_subnet_with_its_own_sg_and_settings(run):
    (fn,) = of_type(run, "aws:lambda/function:Function").values()
    assert fn["runtime"] == "python3.13" and fn["handler"] == "snapshot_lambda.handler.handler"
    assert fn["architectures"] == ["x86_64"] and fn["timeout"] == 900
    assert fn["vpcConfig"]["subnetIds"] == ["talos-dr-lambda-subnet-id"]
    assert fn["vpcConfig"]["securityGroupIds"] == ["talos-dr-lambda-sg-id"]
    env = fn["environment"]["variables"]
    assert env[lh.ENV_NODE] == "10.0.1.10" and env[lh.ENV_BUCKET] == "talos-dr-etcd-backups-a1b2c3d"
    assert env[lh.ENV_CREDENTIAL_KEY] == "credentials/etcd-backup.json"
    assert env[lh.ENV_AGE_RECIPIENTS] == "age1qqqq,age1pppp"
    assert env[lh.ENV_PREFIX] == "snapshots/" and env[lh.ENV_CLUSTER] == "talos-dr"
    assert "TALOS_DR_SECRET_ID" not in env
    assert fn["role"] == "arn:aws:iam:us-east-1:123456789012:talos-dr-lambda-role"


def test_lambda_role_may_write_snapshot_keys_and_latest_and_read_its_credential_never_delete(run):
    pol = json.loads(run.resources["talos-dr-lambda-policy"][1]["policy"])
    by_sid = {s["Sid"]: s for s in pol["Statement"]}
    actions = [a for s in pol["Statement"] for a in s["Action"]]
    assert not [a for a in actions if "Delete" in a or a.endswith("*") or not a.startswith("s3:")], actions
    snaps = f"{BUCKET_ARN}/snapshots/*etcd-snapshot-*"
    assert by_sid["WriteSnapshots"]["Action"] == ["s3:PutObject", "s3:AbortMultipartUpload", "s3:PutObjectTagging"]
    assert by_sid["WriteSnapshots"]["Resource"] == [snaps, f"{BUCKET_ARN}/snapshots/latest"]
    assert by_sid["ReadBackSnapshots"] == {"Sid": "ReadBackSnapshots", "Effect": "Allow",
                                           "Action": ["s3:GetObject", "s3:GetObjectTagging"], "Resource": [snaps]}
    assert by_sid["ListSnapshots"]["Resource"] == [BUCKET_ARN]
    assert by_sid["ListSnapshots"]["Condition"] == {"StringLike": {"s3:prefix": ["snapshots/*"]}}
    assert by_sid["ReadBackupCredential"]["Action"] == ["s3:GetObject"]
    assert by_sid["ReadBackupCredential"]["Resource"] == [f"{BUCKET_ARN}/credentials/etcd-backup.json"]
    assert set(by_sid) == {"WriteSnapshots", "ReadBackSnapshots", "ListSnapshots", "ReadBackupCredential"}
    att = run.resources["talos-dr-lambda-vpc-access"][1]
    assert att["policyArn"].endswith("service-role/AWSLambdaVPCAccessExecutionRole")
    trust = json.loads(run.resources["talos-dr-lambda-role"][1]["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}


def test_credential_object_holds_a_backup_role_certificate_as_a_pulumi_secret(run, ca):
    from cryptography import x509

    (obj,) = of_type(run, "aws:s3/bucketObjectv2:BucketObjectv2").values()
    assert obj["bucket"] == "talos-dr-etcd-backups-a1b2c3d" and obj["key"] == "credentials/etcd-backup.json"
    assert obj["serverSideEncryption"] == "AES256" and obj["contentType"] == "application/json"
    assert is_secret(obj["content"]), "the credential must be a Pulumi secret"
    creds = TalosCredentials.from_json(unwrap(obj["content"]))
    assert certificate_roles(creds.cert_pem) == ["os:etcd:backup"] and creds.ca_pem == ca[0]
    cert = x509.load_pem_x509_certificate(creds.cert_pem)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca[0]))
    # No Secrets Manager at all: no secret, no version, no interface endpoint (it would cost ~$7.70 a month).
    assert not [t for t, _ in run.resources.values() if t.startswith("aws:secretsmanager")]
    (watch,) = of_type(run, "pulumi-python:dynamic:Resource").values()
    assert watch["credential_not_after"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_credential_is_stable_across_runs(ca, run):
    again, _ = run_component(ca)
    (v1,) = of_type(run, "aws:s3/bucketObjectv2:BucketObjectv2").values()
    (v2,) = of_type(again, "aws:s3/bucketObjectv2:BucketObjectv2").values()
    assert unwrap(v1["content"]) == unwrap(v2["content"])  # no diff, no new version on every `up`


def test_network_wiring(run):
    ingress = run.resources["talos-dr-apid-from-lambda"][1]
    assert ingress["securityGroupId"] == "sg-node" and ingress["referencedSecurityGroupId"] == "talos-dr-lambda-sg-id"
    assert (ingress["fromPort"], ingress["toPort"], ingress["ipProtocol"]) == (50000, 50000, "tcp")
    subnet = run.resources["talos-dr-lambda-subnet"][1]
    assert subnet == {"vpcId": "vpc-1", "cidrBlock": "10.0.255.240/28", "availabilityZone": "us-east-1a",
                      "mapPublicIpOnLaunch": False, "tags": {"Name": "talos-dr-lambda"}}
    assert run.resources["talos-dr-lambda-rt-assoc"][1] == {"subnetId": "talos-dr-lambda-subnet-id",
                                                           "routeTableId": "talos-dr-lambda-rt-id"}
    # The Lambda's route table has no route out of the VPC: no internet gateway, no NAT.
    assert not of_type(run, "aws:ec2/route:Route") and not of_type(run, "aws:ec2/natGateway:NatGateway")
    (s3e,) = of_type(run, "aws:ec2/vpcEndpoint:VpcEndpoint").values()
    assert s3e["vpcEndpointType"] == "Gateway" and s3e["routeTableIds"] == ["talos-dr-lambda-rt-id"]
    assert s3e["serviceName"] == "com.amazonaws.us-east-1.s3"
    # The endpoint reaches this bucket only: a compromised Lambda cannot copy snapshots out.
    (stmt,) = json.loads(s3e["policy"])["Statement"]
    assert stmt["Effect"] == "Allow" and stmt["Resource"] == [BUCKET_ARN, f"{BUCKET_ARN}/*"]
    assert not [a for a in stmt["Action"] if "Delete" in a or a.endswith("*")]
    to_s3 = run.resources["talos-dr-lambda-to-s3"][1]
    assert to_s3["prefixListId"] == "pl-63a5400a" and to_s3["fromPort"] == 443
    to_apid = run.resources["talos-dr-lambda-to-apid"][1]
    assert to_apid["referencedSecurityGroupId"] == "sg-node" and to_apid["fromPort"] == 50000
    egress = of_type(run, "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
    assert set(egress) == {"talos-dr-lambda-to-apid", "talos-dr-lambda-to-s3"}


def test_watch_resource_invokes_the_lambda(run):
    (watch,) = of_type(run, "pulumi-python:dynamic:Resource").values()
    assert watch["function_name"] == "talos-dr-snapshot" and watch["interval_seconds"] == 3600
    assert watch["bucket"] == "talos-dr-etcd-backups-a1b2c3d" and watch["prefix"] == "snapshots/"
    assert watch["__provider"]  # the provider really was serialized (by reference)
    deps = run.monitor.deps["talos-dr-watch"]
    urn = run.monitor.urns
    # the proving snapshot waits for the cluster's bootstrap and for every path it needs
    for name in ("bootstrap", "talos-dr-snapshot", "talos-dr-credential-object", "talos-dr-apid-from-lambda",
                 "talos-dr-s3", "talos-dr-lambda-to-apid", "talos-dr-lambda-to-s3"):
        assert urn[name] in deps, (name, urn["talos-dr-watch"])


def test_lambda_subnet_is_the_vpcs_last_block_outside_the_nodes():
    from infra.schedule import lambda_subnet_cidr

    assert lambda_subnet_cidr("10.0.0.0/16", "10.0.1.0/24") == "10.0.255.240/28"
    assert lambda_subnet_cidr("10.0.0.0/24", "10.0.0.240/28") == "10.0.0.224/28"
    with pytest.raises(ValueError, match="no /28"):
        lambda_subnet_cidr("10.0.0.0/28", "10.0.0.0/28")


def test_prove_off_and_bad_schedule(ca):
    mocks, _ = run_component(ca, prove=False, schedule_expression="cron(0 */6 * * ? *)")
    assert not of_type(mocks, "pulumi-python:dynamic:Resource")
    (sched,) = of_type(mocks, "aws:scheduler/schedule:Schedule").values()
    assert sched["scheduleExpression"] == "cron(0 */6 * * ? *)"
    with pytest.raises(Exception, match="rate"):
        run_component(ca, schedule_expression="every hour")


def test_an_exhausted_run_is_recorded_in_a_queue_the_runner_may_only_send_to(run):
    (queue,) = of_type(run, "aws:sqs/queue:Queue").values()
    assert queue["messageRetentionSeconds"] == 14 * 86400 and queue["sqsManagedSseEnabled"] is True
    pol = json.loads(run.resources["talos-dr-lambda-destination-policy"][1]["policy"])
    assert pol["Statement"] == [{"Sid": "RecordFailedRuns", "Effect": "Allow", "Action": ["sqs:SendMessage"],
                                 "Resource": ["arn:aws:sqs:us-east-1:123456789012:talos-dr-failed-runs-queue"]}]
    assert run.resources["talos-dr-lambda-destination-policy"][1]["role"] == "talos-dr-lambda-role-id"


@pytest.mark.parametrize("interval, attempts, age", [
    (3600, 2, 2640),  # hourly: both retries fit before the next run
    (86400, 2, 21600),  # daily: Lambda's 6-hour maximum
    (1800, 2, 840),
    (1020, 2, 60),  # retries only while the event is a minute old: a failure that took the whole run is not retried
    (1019, 0, 959),  # too short for any retry window: the next run is the retry
    (300, 0, 240),
    (60, 0, 60),
])
def test_retries_never_reach_the_next_scheduled_run(interval, attempts, age):
    from infra.schedule import LAMBDA_TIMEOUT, SCHEDULER_DELIVERY_WINDOW, retry_settings

    r = retry_settings(interval)
    assert (r.lambda_attempts, r.lambda_max_age) == (attempts, age)
    assert 60 <= r.lambda_max_age <= 21600 and r.scheduler_max_age == SCHEDULER_DELIVERY_WINDOW == 60
    if r.lambda_attempts:
        assert r.scheduler_max_age + r.lambda_max_age + LAMBDA_TIMEOUT <= interval


def test_the_runner_gets_its_stall_timeout_quota_and_namespace(run):
    (fn,) = of_type(run, "aws:lambda/function:Function").values()
    env = fn["environment"]["variables"]
    assert env[lh.ENV_STALL_TIMEOUT] == "45" and float(env[lh.ENV_STALL_TIMEOUT]) < 60
    assert env[lh.ENV_ETCD_QUOTA] == str(2 * 1024**3) and env[lh.ENV_METRICS_NAMESPACE] == "TalosDR"


def test_preview_warns_when_the_runtime_nears_its_end(ca, monkeypatch):
    """The program (run by `pulumi preview` and `pulumi up`) warns from 180 days before AWS deprecates the runtime,
    as it does for the credential."""
    said: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: said.append(msg))
    run_component(ca)
    assert not [m for m in said if "runtime" in m]
    run_component(ca, now=datetime(2029, 3, 1, tzinfo=UTC))
    (msg,) = [m for m in said if "runtime" in m]
    assert "python3.13 is deprecated by AWS on 2029-06-30" in msg and "`pulumi up`" in msg
