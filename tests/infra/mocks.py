"""Pulumi mocks for the stack: one Mocks class keyed by type token, a monitor that records resource options,
and ``run_program`` which builds the stack from a config mapping and returns everything it registered.

The snapshot schedule's Lambda package is built for real under ``run_program``, but offline: from fake wheels in a
temporary folder (``TALOS_DR_LAMBDA_WHEELS``) into a temporary cache, so no test runs ``pip download`` or writes to
``~/.cache``.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import functools
import hashlib
import json
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import settings

from dr.core.credentials import new_ca
from dr.core.naming import snapshot_name
from dr.core.outputs import DEFAULT_SNAPSHOT_PREFIX, DEFAULT_STACK, PROJECT_NAME

ROOT = Path(__file__).resolve().parents[2]
PROD_STACK_FILE = ROOT / "Pulumi.prod.yaml"

PUBLIC_IP = "198.51.100.7"
PRIVATE_IP = "10.0.1.10"
LB_DNS_NAME = "talos-dr-api-0123456789abcdef.elb.us-east-1.amazonaws.com"  # the three-node stack's API endpoint
AMI_ID = "ami-0a1b2c3d4e5f60718"
ACCOUNT_ID = "123456789012"
S3_PREFIX_LIST = "pl-63a5400a"
# What EC2's DescribeInstanceTypes reports as SupportedArchitectures (aws ec2 describe-instance-types).
INSTANCE_ARCHITECTURES = {
    "t3.medium": ["i386", "x86_64"],
    "m5.large": ["x86_64"],
    "t4g.medium": ["arm64"],
    "m7g.large": ["arm64"],
    "mac2.metal": ["arm64_mac"],
}
# What the mocked EtcdSnapshotSchedule reports, as if its proving snapshot had just landed.
NEWEST_SNAPSHOT_TIME = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
NEWEST_SNAPSHOT_KEY = DEFAULT_SNAPSHOT_PREFIX + snapshot_name(NEWEST_SNAPSHOT_TIME)

# The OS CA in the mocked machine secrets: a real Ed25519 CA (as Talos makes it), base64 PEM as pulumiverse-talos
# hands it over, so the schedule's credential is really minted from it.
OS_CA_CERT, OS_CA_KEY = new_ca("talos")
OS_CA_B64 = {"cert": base64.b64encode(OS_CA_CERT).decode(), "key": base64.b64encode(OS_CA_KEY).decode()}

# Resources AWS gives an ARN (and a name) that the schedule's wiring reads.
_ARN_TYPES = {
    "aws:iam/role:Role": "iam",
    "aws:lambda/function:Function": "lambda",
    "aws:secretsmanager/secret:Secret": "secretsmanager",
    "aws:scheduler/schedule:Schedule": "scheduler",
    "aws:scheduler/scheduleGroup:ScheduleGroup": "scheduler",
    "aws:sqs/queue:Queue": "sqs",
    "aws:sns/topic:Topic": "sns",
}
# Who runs `pulumi up` in the mocks: a role session, as SSO or `aws sts assume-role` gives one.
DEPLOYER_ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/deployer"
DEPLOYER_SESSION = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/deployer/alice"


def public_ip_of(eip_name: str) -> str:
    """Node 0's Elastic IP is PUBLIC_IP; node i's (``<cluster>-cp<i>-eip``) 198.51.100.(7 + 10 i)."""
    found = re.search(r"-cp(\d+)-eip$", eip_name)
    return f"198.51.100.{7 + 10 * int(found.group(1))}" if found else PUBLIC_IP


def fake_id(prefix: str, name: str) -> str:
    return f"{prefix}-{hashlib.sha256(name.encode()).hexdigest()[:17]}"


@dataclass
class Registered:
    typ: str
    name: str
    id: str
    inputs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)


class Mocks(pulumi.runtime.Mocks):
    """Fake provider: echoes inputs and adds the outputs the cloud would compute, by type token."""

    def __init__(self) -> None:
        self.resources: dict[str, Registered] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        inputs = dict(args.inputs)
        outs = dict(inputs)
        rid = f"{args.name}-id"
        typ = args.typ
        if typ == "aws:ec2/instance:Instance":
            rid = fake_id("i", args.name)
            # EC2 gives the instance the address it asks for (each node's is pinned), else the node's default.
            outs.update(privateIp=inputs.get("privateIp") or PRIVATE_IP, availabilityZone="us-east-1a",
                        arn=f"arn:aws:ec2:::instance/{rid}")
        elif typ == "aws:ec2/eip:Eip":
            rid = fake_id("eipalloc", args.name)
            outs.update(publicIp=public_ip_of(args.name), allocationId=rid)
        elif typ == "aws:lb/loadBalancer:LoadBalancer":
            rid = f"arn:aws:elasticloadbalancing:us-east-1:{ACCOUNT_ID}:loadbalancer/net/{args.name}/0123456789abcdef"
            outs.update(arn=rid, dnsName=LB_DNS_NAME)
        elif typ == "aws:lb/targetGroup:TargetGroup":
            rid = f"arn:aws:elasticloadbalancing:us-east-1:{ACCOUNT_ID}:targetgroup/{args.name}/0123456789abcdef"
            outs.update(arn=rid)
        elif typ == "aws:ec2/eipAssociation:EipAssociation":
            rid = fake_id("eipassoc", args.name)
        elif typ == "aws:ebs/volume:Volume":
            rid = fake_id("vol", args.name)
            outs.update(arn=f"arn:aws:ec2:::volume/{rid}")
        elif typ == "aws:ec2/vpc:Vpc":
            rid = fake_id("vpc", args.name)
        elif typ == "aws:ec2/subnet:Subnet":
            rid = fake_id("subnet", args.name)
        elif typ == "aws:ec2/securityGroup:SecurityGroup":
            rid = fake_id("sg", args.name)
        elif typ == "aws:ec2/routeTable:RouteTable":
            rid = fake_id("rtb", args.name)
        elif typ == "aws:s3/bucket:Bucket":
            bucket = inputs.get("bucket") or f"{args.name}-a1b2c3d"
            rid = bucket
            outs.update(bucket=bucket, arn=f"arn:aws:s3:::{bucket}")
        elif typ == "talos:machine/secrets:Secrets":
            outs.update(
                clientConfiguration={"caCertificate": "CA", "clientCertificate": "CRT", "clientKey": "KEY"},
                machineSecrets={
                    "cluster": {"id": "cid", "secret": "csecret"},
                    "secrets": {"bootstrapToken": "tok", "secretboxEncryptionSecret": "sbox"},
                    "trustdinfo": {"token": "trustd"},
                    # Every CA a talosctl secrets bundle holds (the recovery kit checks them all); only the OS CA
                    # is a real one, the others are placeholders.
                    "certs": {"os": dict(OS_CA_B64), "etcd": {"cert": "RVRDRC1DQQ==", "key": "RVRDRC1LRVk="},
                              "k8s": {"cert": "SzhTLUNB", "key": "SzhTLUtFWQ=="},
                              "k8sAggregator": {"cert": "QUdHLUNB", "key": "QUdHLUtFWQ=="},
                              "k8sServiceaccount": {"key": "U0EtS0VZ"}},
                },
            )
        elif typ == "talos:cluster/kubeconfig:Kubeconfig":
            outs.update(kubeconfigRaw="apiVersion: v1\nkind: Config\nusers: [{name: admin, user: {token: x}}]\n")
        elif typ == "talos:machine/configurationApply:ConfigurationApply":
            outs.update(machineConfiguration=inputs.get("machineConfigurationInput"))
        elif typ == "aws:scheduler/scheduleGroup:ScheduleGroup":
            outs.update(arn=f"arn:aws:scheduler:us-east-1:{ACCOUNT_ID}:schedule-group/{args.name}", name=args.name)
        elif typ == "aws:iam/role:Role":
            outs.update(arn=f"arn:aws:iam::{ACCOUNT_ID}:role/{args.name}", name=args.name)
        elif typ in _ARN_TYPES:
            outs.update(arn=f"arn:aws:{_ARN_TYPES[typ]}:us-east-1:{ACCOUNT_ID}:{args.name}", name=args.name)
        elif typ == "aws:ec2/vpcEndpoint:VpcEndpoint":
            rid = fake_id("vpce", args.name)
            if inputs.get("vpcEndpointType") == "Gateway":
                outs.update(prefixListId=S3_PREFIX_LIST)
        elif typ == "pulumi-python:dynamic:Resource":
            # Every dynamic resource has this token; tell them apart by their inputs.
            if "path" in inputs:  # infra.providers.secret_file.LocalSecretFile
                outs.update(sha256=hashlib.sha256(str(inputs.get("content")).encode()).hexdigest())
            elif "kubeconfig" in inputs:  # infra.providers.cluster_ready.ClusterReady, once /readyz answered
                outs.update(server=f"https://{PUBLIC_IP}:6443", attempts=3)
            elif "identities" in inputs:  # infra.providers.bootstrap_generation.BootstrapGeneration, as its check
                from infra.providers.bootstrap_generation import BootstrapGenerationProvider
                outs = dict(BootstrapGenerationProvider().check({}, inputs).inputs)
            elif "interval_seconds" in inputs:  # infra.providers.backup_check.EtcdSnapshotSchedule, after its proving snapshot
                outs.update(backups="fresh", newest_snapshot_key=NEWEST_SNAPSHOT_KEY,
                            newest_snapshot_time=NEWEST_SNAPSHOT_TIME.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            proof_snapshot_key=NEWEST_SNAPSHOT_KEY)
        elif typ == "kubernetes:helm.sh/v3:Release":
            outs.update(status={"status": "deployed", "namespace": inputs.get("namespace")})
        self.resources[args.name] = Registered(typ, args.name, rid, inputs)
        return rid, outs

    def call(self, args: pulumi.runtime.MockCallArgs):
        self.calls.append((args.token, dict(args.args)))
        if args.token == "aws:ec2/getInstanceType:getInstanceType":
            itype = args.args.get("instanceType")
            return {"instanceType": itype, "supportedArchitectures": INSTANCE_ARCHITECTURES.get(itype, ["x86_64"])}
        if args.token == "aws:ec2/getAmi:getAmi":
            # The image the filters ask for, as EC2 would return it.
            wanted = {f["name"]: f["values"][0] for f in args.args.get("filters") or []}
            return {"id": AMI_ID, "imageId": AMI_ID, "name": wanted.get("name"), "architecture": wanted.get("architecture")}
        if args.token == "talos:machine/getConfiguration:getConfiguration":
            patches = args.args.get("configPatches") or []
            return {"machineConfiguration": "version: v1alpha1\n---\n" + "\n---\n".join(patches)}
        if args.token == "talos:client/getConfiguration:getConfiguration":
            return {"talosConfig": f"context: {args.args.get('clusterName')}\n"}
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            # What EC2 DescribeAvailabilityZones lists for an account in us-east-1 (a-f; which letters an account has
            # varies).
            names = [f"us-east-1{c}" for c in "abcdef"]
            return {"names": names, "zoneIds": [f"use1-az{i}" for i in range(1, 7)], "id": "us-east-1"}
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT_ID, "arn": DEPLOYER_SESSION, "id": ACCOUNT_ID, "userId": "AROAEXAMPLE:alice"}
        if args.token == "aws:iam/getSessionContext:getSessionContext":
            arn = args.args.get("arn")
            # What the data source answers: the role behind an assumed-role session, anything else as it is.
            issuer = DEPLOYER_ROLE if arn == DEPLOYER_SESSION else arn
            return {"arn": arn, "issuerArn": issuer, "issuerId": "AROAEXAMPLE", "issuerName": "deployer",
                    "sessionName": "alice", "id": arn}
        return {}


class RecordingEngine(pulumi_mocks.MockEngine):
    """MockEngine that answers RequirePulumiVersion (the mock engine lacks it) as a CLI of ``cli_version`` would."""

    def __init__(self, cli_version: str | None = "3.272.0") -> None:
        super().__init__(None)
        self.cli_version = cli_version  # None: a CLI too old to implement the RPC
        self.required: list[str] = []

    def RequirePulumiVersion(self, request):  # noqa: N802 (gRPC method name)
        import grpc
        from pulumi.runtime.proto import engine_pb2

        self.required.append(request.pulumi_version_range)
        if self.cli_version is None:
            raise _RpcError(grpc.StatusCode.UNIMPLEMENTED, "unknown method RequirePulumiVersion")
        want = request.pulumi_version_range
        assert want.startswith(">="), want  # the only form the program uses
        have = tuple(int(x) for x in self.cli_version.split("."))
        if have < tuple(int(x) for x in want[2:].split(".")):
            # sdk/go/common/resource/plugin/host_server.go returns ValidatePulumiVersionRange's error as is.
            raise _RpcError(grpc.StatusCode.UNKNOWN,
                            f"Pulumi CLI version {self.cli_version} does not satisfy the version range {want!r}")
        return engine_pb2.RequirePulumiVersionResponse()


class _RpcError(Exception):
    def __init__(self, code, details: str) -> None:
        import grpc

        self.__class__ = type("_RpcError", (_RpcError, grpc.RpcError), {})
        super().__init__(details)
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """MockMonitor that also keeps each resource's options (protect, triggers, ...), which Mocks never sees."""

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self.options: dict[str, dict[str, Any]] = {}  # custom resources by name (names are unique among them)
        self.urns: dict[str, str] = {}
        self.components: dict[str, str] = {}  # component type token -> URN

    def RegisterResource(self, request):  # noqa: N802 (gRPC method name)
        trigger = None
        if request.HasField("replacement_trigger"):
            trigger = json_format.MessageToDict(request.replacement_trigger)
        options = {
            "type": request.type,
            "parent": request.parent,
            "protect": request.protect,
            "retain_on_delete": request.retainOnDelete,
            "delete_before_replace": request.deleteBeforeReplace,
            "ignore_changes": list(request.ignoreChanges),
            "replace_on_changes": list(request.replaceOnChanges),
            "additional_secret_outputs": list(request.additionalSecretOutputs),
            "dependencies": list(request.dependencies),
            "provider": request.provider,
            "replacement_trigger": trigger,
        }
        response = super().RegisterResource(request)
        if request.custom:
            self.options[request.name] = options
            self.urns[request.name] = response.urn
        else:  # component names repeat (most are the cluster name): key them by type
            self.components[request.type] = response.urn
        return response


@dataclass
class ProgramRun:
    mocks: Mocks
    monitor: RecordingMonitor
    outputs: dict[str, Any]  # key -> value
    secret: dict[str, bool]  # key -> is the output secret
    stack: Any
    engine: RecordingEngine | None = None
    lambda_wheel_dirs: list[str | None] = field(default_factory=list)  # wheel_dir of each Lambda package build

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.mocks.resources.values() if r.typ == typ]

    def one(self, typ: str) -> Registered:
        found = self.of_type(typ)
        assert len(found) == 1, f"expected one {typ}, found {[r.name for r in found]}"
        return found[0]

    def options(self, name: str) -> dict[str, Any]:
        return self.monitor.options[name]

    def urn(self, name: str) -> str:
        return self.monitor.urns[name]

    def calls(self, token: str) -> list[dict[str, Any]]:
        return [a for t, a in self.mocks.calls if t == token]

    def dynamic(self, kind: str) -> list[Registered]:
        """Dynamic resources of one kind: ``"file"`` (LocalSecretFile), ``"schedule"`` (EtcdSnapshotSchedule),
        ``"ready"`` (ClusterReady), ``"size"`` (ControlPlaneSize) or ``"generation"`` (BootstrapGeneration)."""
        marker = {"file": "path", "schedule": "interval_seconds", "ready": "kubeconfig", "size": "nodes",
                  "generation": "identities"}[kind]
        return [r for r in self.of_type("pulumi-python:dynamic:Resource") if marker in r.inputs]


def stack_file_config(path: Path = PROD_STACK_FILE) -> dict[str, str]:
    """A stack file's config as the Pulumi CLI hands it to the program: every value a string, objects as JSON."""
    raw = yaml.safe_load(path.read_text())["config"]

    def as_cli(value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return str(value)
        return json.dumps(value)

    return {key: as_cli(value) for key, value in raw.items()}


def fake_lambda_wheels(dest: Path) -> Path:
    """Fill ``dest`` with tiny wheels named like the Lambda's requirements (pure Python, or manylinux x86_64)."""
    from infra.lambda_package import LAMBDA_REQUIREMENTS

    dest.mkdir(parents=True, exist_ok=True)
    for req in LAMBDA_REQUIREMENTS:
        name, _, version = req.partition("==")
        dist = re.sub(r"[-_.]+", "_", name)  # a wheel's file name escapes the project name (PEP 427)
        tags = "cp39-abi3-manylinux2014_x86_64" if dist == "protobuf" else "py3-none-any"
        with zipfile.ZipFile(dest / f"{dist}-{version}-{tags}.whl", "w") as z:
            z.writestr(f"{dist}/__init__.py", f"__version__ = {version!r}  # fake wheel for tests\n")
    return dest


def fake_lambda_hashes(wheel_dir: Path) -> dict[str, frozenset[str]]:
    """What the lock would list for the fake wheels in ``wheel_dir``: their own SHA-256s. (The real wheels are checked
    against requirements.lock; tests/infra/test_lambda_package.py tests that check.)"""
    from infra.lambda_package import LAMBDA_REQUIREMENTS

    out = {}
    for req in LAMBDA_REQUIREMENTS:
        name, _, version = req.partition("==")
        wheels = wheel_dir.glob(f"{re.sub(r'[-_.]+', '_', name)}-{version}-*.whl") if wheel_dir.is_dir() else []
        out[req] = frozenset(hashlib.sha256(w.read_bytes()).hexdigest() for w in wheels)
    return out


@functools.cache
def _offline_lambda_dirs() -> tuple[Path, Path]:
    root = Path(tempfile.mkdtemp(prefix="talos-dr-test-lambda-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return fake_lambda_wheels(root / "wheels"), root / "cache"


def reset_pulumi() -> None:
    """Forget any earlier program's runtime state (other test modules may run Pulumi mocks in this process)."""
    settings.reset_options(project=PROJECT_NAME, stack=DEFAULT_STACK, preview=False)
    pulumi.runtime.set_all_config({}, [])


def run_program(config: dict[str, str], secret_keys: list[str] | None = None, talos_dir: Path | None = None,
                entry=None, mocks: Mocks | None = None, engine: RecordingEngine | None = None) -> ProgramRun:
    """Build the stack under mocks with ``config`` (full keys, CLI-style string values) and resolve its outputs.

    ``entry`` (default: load_config + build) is called inside the mocked runtime and returns a dict of outputs.
    """
    from infra import lambda_package
    from infra.config import load_config
    from infra.stack import build

    # The Lambda package is really built (dr/ + wheels, zipped), but never downloads: the wheels come from the
    # snapshotLambdaWheelDir config key when a test sets it, else from the fake wheels (the env fallback).
    wheels, cache = _offline_lambda_dirs()
    real_package = lambda_package.lambda_package
    packages: list[str | None] = []

    def offline_package(wheel_dir: str | None = None, **_: Any) -> pulumi.FileArchive:
        packages.append(wheel_dir)
        return real_package(wheel_dir, cache_dir=cache, hashes=fake_lambda_hashes(Path(wheel_dir or wheels)))

    patch = pytest.MonkeyPatch()
    patch.setenv(lambda_package.WHEEL_DIR_ENV, str(wheels))
    patch.setattr(lambda_package, "lambda_package", offline_package)

    reset_pulumi()
    pulumi.runtime.set_all_config(dict(config), list(secret_keys or []))
    mocks = mocks or Mocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT_NAME, stack=DEFAULT_STACK, preview=False, monitor=monitor)
    engine = engine or RecordingEngine()
    settings.SETTINGS.engine = engine  # set_mocks installs a MockEngine, which has no RequirePulumiVersion

    resolved: dict[str, Any] = {}
    secret: dict[str, bool] = {}
    holder: dict[str, Any] = {}

    @pulumi.runtime.test
    def program():
        if entry is not None:
            outputs = entry()
        else:
            stack = build(load_config(), talos_dir or Path("/nonexistent/.talos"))
            holder["stack"] = stack
            outputs = stack.outputs

        async def resolve() -> None:
            for key, out in outputs.items():
                out = pulumi.Output.from_input(out)
                resolved[key] = await out.future()
                secret[key] = await out.is_secret()

        return pulumi.Output.from_input(asyncio.ensure_future(resolve()))

    try:
        program()
    finally:
        reset_pulumi()
        patch.undo()
    return ProgramRun(mocks=mocks, monitor=monitor, outputs=resolved, secret=secret, stack=holder.get("stack"),
                      engine=engine, lambda_wheel_dirs=packages)
