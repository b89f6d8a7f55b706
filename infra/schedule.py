"""Scheduled etcd snapshots: a Lambda in the node's VPC streams a snapshot to S3 every hour, with the least
privilege Talos allows (an ``os:etcd:backup`` client certificate), and ``pulumi preview`` says when backups are stale.

Resources (children of ``SnapshotSchedule``):

* the credential: a Secrets Manager secret holding a deterministic ``os:etcd:backup`` certificate minted from the
  OS CA in the machine secrets (``dr.core.credentials``: same bytes on every ``up`` within a 180-day period, so no diff);
* network: the Lambda's own security group; an ingress rule on the node's group admitting 50000/tcp from it; an S3
  *gateway* endpoint on the node's route table (free, no NAT); a Secrets Manager *interface* endpoint (the subnet has
  no NAT, and a VPC Lambda has no public address);
* the Lambda (``snapshot_lambda.handler.handler``, python3.11 x86_64) with a role allowed to write, tag and read back
  ``<bucket>/snapshots/*`` only, read this one secret, and manage its VPC ENIs — never delete;
* an EventBridge Scheduler schedule (``snapshotSchedule``) whose role may only invoke this function;
* ``EtcdSnapshotSchedule`` (``infra/providers/backup_check.py``): takes and verifies one snapshot through the Lambda on create, flags
  stale backups at preview, takes a catch-up snapshot on ``up``.

The deployment package is built by ``lambda_package``: wheels for the Lambda platform come from a cache directory
(filled by ``pip download`` on first use, or pre-populated / pointed at for offline machines), each wheel checked
against the SHA-256s ``requirements.lock`` lists for its version, then this repo's
``dr/`` and the wheels' contents are zipped deterministically (sorted entries, fixed timestamps and modes), so the
same sources give the same bytes and ``pulumi up`` shows no change.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from dr.adapters.fsutil import atomic_writer
from dr.adapters.talosapi import APID_PORT
from dr.core.outputs import DEFAULT_SNAPSHOT_PREFIX
from snapshot_lambda import handler as lh

ROOT = Path(__file__).resolve().parent.parent
LAMBDA_RUNTIME = "python3.11"
LAMBDA_HANDLER = "snapshot_lambda.handler.handler"
# What the Lambda needs beyond the runtime's own boto3: the h2 transport (pure Python; grpcio is not used there
# because it cannot handshake with Talos's Ed25519 apid key) and protobuf for the messages. cryptography is left
# out on purpose: the runner only uses it for an optional local expiry check, and it would drag cffi along.
LAMBDA_REQUIREMENTS: tuple[str, ...] = ("h2==4.3.0", "hpack==4.1.0", "hyperframe==6.1.0", "protobuf==6.33.6")
# Each wheel's SHA-256 must be one this lock lists for its pinned version (pip-compile --generate-hashes records every
# file published for a version, so the Lambda platform's manylinux/py3 wheel is among them). Whatever put a wheel in
# the cache or wheel folder, one whose hash is not listed is refused.
LOCK_FILE = ROOT / "requirements.lock"
LAMBDA_PLATFORM = "manylinux2014_x86_64"
LAMBDA_PYTHON = "3.11"
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "talos-dr" / "lambda"
WHEEL_DIR_ENV = "TALOS_DR_LAMBDA_WHEELS"
WHEEL_DIR_CONFIG_KEY = "snapshotLambdaWheelDir"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry


class PackageError(RuntimeError):
    """The Lambda deployment package cannot be built; the message says what to do."""


# --- the deployment package (pure functions over directories; no Pulumi) -------------------------------------------


def _dist_name(requirement: str) -> str:
    return requirement.split("==")[0].strip().lower().replace("-", "_")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).strip().lower()


# Hashes allowed per requirement ("name==version" as in LAMBDA_REQUIREMENTS): hex SHA-256 digests.
WheelHashes = Mapping[str, frozenset[str]]


def locked_hashes(requirements: Sequence[str] = LAMBDA_REQUIREMENTS, lock: Path = LOCK_FILE) -> dict[str, frozenset[str]]:
    """The SHA-256s ``lock`` (a pip-compile --generate-hashes file) lists for each ``name==version`` requirement.

    Raises ``PackageError`` when a requirement is not in the lock at that version, or has no hashes there."""
    try:
        text = lock.read_text()
    except OSError as exc:
        raise PackageError(f"cannot read {lock} (the hash-pinned lock the Lambda's wheels are checked against): {exc}") from exc
    pins: dict[str, tuple[str, frozenset[str]]] = {}
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        pin, _, rest = line.partition(" ")
        name, sep, version = pin.split(";", 1)[0].partition("==")
        if sep:
            pins[_canonical(name)] = (version, frozenset(re.findall(r"--hash=sha256:([0-9a-f]{64})", rest)))
    out = {}
    for req in requirements:
        name, _, version = req.partition("==")
        locked_version, hashes = pins.get(_canonical(name), (None, frozenset()))
        if locked_version != version or not hashes:
            have = f"has {name}=={locked_version}" if locked_version else f"does not list {name}"
            raise PackageError(f"the snapshot Lambda needs {req} but {lock.name} {have}{'' if hashes else ' with hashes'}: "
                               "make LAMBDA_REQUIREMENTS (infra/schedule.py) and requirements.txt agree, then `make lock`")
        out[req] = hashes
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_wheels(
    wheel_dir: Path, requirements: Sequence[str] = LAMBDA_REQUIREMENTS, hashes: WheelHashes | None = None
) -> list[Path] | None:
    """The wheels in ``wheel_dir`` that satisfy ``requirements`` (name==version), or None when any is missing.

    Every Lambda-compatible wheel there for a requirement must have a SHA-256 that ``hashes`` (default: the lock's)
    lists for it; one that does not is refused (``PackageError``), not skipped: a changed wheel is a warning sign."""
    if not wheel_dir.is_dir():
        return None
    allowed = hashes if hashes is not None else locked_hashes(requirements)
    found = []
    for req in requirements:
        name, _, version = req.partition("==")
        prefix = f"{_dist_name(name)}-{version}-".lower()
        matches = sorted(p for p in wheel_dir.glob("*.whl") if p.name.lower().startswith(prefix) and lambda_compatible(p.name))
        if not matches:
            return None
        for wheel in matches:
            digest = _sha256(wheel)
            if digest not in allowed.get(req, ()):
                raise PackageError(f"refusing {wheel}: its SHA-256 {digest} is not one {LOCK_FILE.name} lists for {req} "
                                   "(delete it and download it again)")
        found.append(matches[0])
    return found


def lambda_compatible(wheel_name: str) -> bool:
    """Whether a wheel (by its file name tags) runs on the Lambda: CPython 3.11 on manylinux x86_64, or pure Python."""
    parts = wheel_name[: -len(".whl")].split("-")
    if len(parts) < 5:
        return False
    python, abi, platform = parts[-3], parts[-2], parts[-1]
    if platform == "any":
        return True
    linux = any(t.startswith("manylinux") and t.endswith("_x86_64") for t in platform.split("."))
    return linux and (python in ("cp311", "py3") or (abi == "abi3" and python.startswith("cp3")))


def pip_download(dest: Path, requirements: Sequence[str], hashes: WheelHashes) -> None:
    """``pip download`` the Lambda platform's wheels into ``dest``: binary only (nothing is compiled here), no
    dependencies beyond the list, and in pip's hash-checking mode against ``hashes``. pip's configured index is used;
    the hashes make the source irrelevant (and ``find_wheels`` checks them again)."""
    with tempfile.TemporaryDirectory(prefix="talos-dr-lambda-") as tmp:
        reqs = Path(tmp) / "requirements.txt"
        reqs.write_text("".join(f"{r} " + " ".join(f"--hash=sha256:{h}" for h in sorted(hashes[r])) + "\n" for r in requirements))
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
            "--require-hashes", "--only-binary=:all:", "--platform", LAMBDA_PLATFORM, "--python-version", LAMBDA_PYTHON,
            "--implementation", "cp", "--dest", str(dest), "-r", str(reqs),
        ]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)


def ensure_wheels(
    wheel_dir: Path | None = None,
    *,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    requirements: Sequence[str] = LAMBDA_REQUIREMENTS,
    download: Callable[[Path, Sequence[str], WheelHashes], None] = pip_download,
    hashes: WheelHashes | None = None,
) -> list[Path]:
    """The Lambda platform's wheels: from ``wheel_dir`` when given (never downloads), else from ``cache_dir``,
    downloading into it once; each checked against ``hashes`` (default: the lock's). Raises ``PackageError`` saying
    how to fix it (typically: no internet, or a wheel whose hash the lock does not list)."""
    hashes = hashes if hashes is not None else locked_hashes(requirements)
    if wheel_dir is not None:
        wheels = find_wheels(wheel_dir, requirements, hashes)
        if wheels is None:
            raise PackageError(
                f"{wheel_dir} does not hold wheels for {', '.join(requirements)} ({LAMBDA_PLATFORM}, Python {LAMBDA_PYTHON}); "
                f"fill it on a machine with internet access: pip download --no-deps --only-binary=:all: --platform {LAMBDA_PLATFORM} "
                f"--python-version {LAMBDA_PYTHON} --implementation cp -d {wheel_dir} {' '.join(requirements)}"
            )
        return wheels
    wheels = find_wheels(cache_dir, requirements, hashes)
    if wheels is not None:
        return wheels
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        download(cache_dir, requirements, hashes)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        raise PackageError(
            f"cannot download the snapshot Lambda's wheels ({', '.join(requirements)}) into {cache_dir}: "
            f"{str(detail).strip()[-300:]}. Without internet access, copy the wheels there (or anywhere, then "
            f"`pulumi config set {WHEEL_DIR_CONFIG_KEY} DIR` or set {WHEEL_DIR_ENV}=DIR); to make them: pip download "
            f"--no-deps --only-binary=:all: --platform {LAMBDA_PLATFORM} --python-version {LAMBDA_PYTHON} --implementation cp "
            f"-d DIR {' '.join(requirements)}. Or set scheduledSnapshots to false."
        ) from exc
    wheels = find_wheels(cache_dir, requirements, hashes)
    if wheels is None:
        raise PackageError(f"pip ran but {cache_dir} still lacks wheels for {', '.join(requirements)}")
    return wheels


LAMBDA_ENTRY = "snapshot_lambda/handler.py"


def handler_sources(root: Path, entry: str = LAMBDA_ENTRY) -> list[Path]:
    """The project's own modules the handler imports, transitively (function-level imports included: modulefinder
    reads the bytecode), with their packages' ``__init__.py``: what the zip must hold, and nothing more."""
    import modulefinder

    finder = modulefinder.ModuleFinder(path=[str(root)], excludes=["boto3", "botocore"])
    finder.run_script(str(root / entry))
    found: set[Path] = {root / entry}
    for mod in finder.modules.values():
        f = getattr(mod, "__file__", None)
        if f and Path(f).resolve().is_relative_to(root.resolve()):
            found.add(Path(f).resolve())
    for path in list(found):
        for parent in path.relative_to(root.resolve() if path.is_absolute() else root).parents:
            init = root / parent / "__init__.py"
            if str(parent) != "." and init.exists():
                found.add(init.resolve())
    return sorted(p.resolve() for p in found)


def _source_files(root: Path, entry: str = LAMBDA_ENTRY) -> dict[str, bytes]:
    root = root.resolve()
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in handler_sources(root, entry)}


def _wheel_files(wheel: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            if info.is_dir() or "__pycache__" in info.filename or info.filename.endswith(".pyc"):
                continue
            files[info.filename] = z.read(info)
    return files


def build_package(
    out_path: Path,
    wheels: Sequence[Path],
    *,
    source_root: Path = ROOT,
    entry: str = LAMBDA_ENTRY,
) -> str:
    """Write the deployment zip to ``out_path`` and return its SHA-256. Deterministic: entries sorted, every
    timestamp 1980-01-01, modes 0644 (0755 for shared objects), so identical inputs give identical bytes."""
    files: dict[str, bytes] = {}
    for wheel in sorted(wheels):
        files.update(_wheel_files(wheel))
    files.update(_source_files(source_root, entry))  # our code wins over anything a wheel ships at the same path
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(out_path, mode=0o644) as f, \
            zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            mode = 0o755 if name.endswith(".so") or ".so." in name else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, whatever builds it
            z.writestr(info, files[name])
    return hashlib.sha256(out_path.read_bytes()).hexdigest()


def lambda_package(
    wheel_dir: str | None = None, *, cache_dir: Path = DEFAULT_CACHE_DIR, hashes: WheelHashes | None = None
) -> pulumi.FileArchive:
    """Build (or reuse) the deployment package and return it as a Pulumi archive."""
    chosen = wheel_dir or os.environ.get(WHEEL_DIR_ENV)
    wheels = ensure_wheels(Path(chosen) if chosen else None, cache_dir=cache_dir, hashes=hashes)
    out = cache_dir / "package" / "talos-dr-snapshot-lambda.zip"
    build_package(out, wheels)
    return pulumi.FileArchive(str(out))


# --- IAM policy documents (pure) ---------------------------------------------------------------------------------


def lambda_policy(bucket_arn: str, prefix: str, secret_arn: str) -> str:
    """The runner's inline policy: write, tag and read back objects under the snapshot prefix; read one secret.

    No s3:DeleteObject, no s3:ListBucket, nothing outside ``<bucket>/<prefix>*``. GetObject is needed because a
    HEAD after the upload (size check) is authorized as GetObject.
    """
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "WriteSnapshots",
                    "Effect": "Allow",
                    "Action": [
                        "s3:PutObject",
                        "s3:AbortMultipartUpload",
                        "s3:ListMultipartUploadParts",
                        "s3:PutObjectTagging",
                        "s3:GetObjectTagging",
                        "s3:GetObject",
                    ],
                    "Resource": [f"{bucket_arn}/{prefix}*"],
                },
                {
                    "Sid": "ReadBackupCredential",
                    "Effect": "Allow",
                    "Action": ["secretsmanager:GetSecretValue"],
                    "Resource": [secret_arn],
                },
            ],
        },
        sort_keys=True,
    )


def invoke_policy(function_arn: str) -> str:
    """The scheduler's policy: invoke this one function, nothing else."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["lambda:InvokeFunction"], "Resource": [function_arn, f"{function_arn}:*"]}
            ],
        },
        sort_keys=True,
    )


def assume_role_policy(service: str, account_id: str | None = None) -> str:
    stmt: dict[str, Any] = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    if account_id:  # confused-deputy guard: only schedules in this account may assume the role
        stmt["Condition"] = {"StringEquals": {"aws:SourceAccount": account_id}}
    return json.dumps({"Version": "2012-10-17", "Statement": [stmt]}, sort_keys=True)


def credential_json(machine_secrets: Mapping[str, Any], cluster: str, now: datetime) -> str:
    """The secret's value: the deterministic os:etcd:backup credential for ``now``'s rotation period."""
    from dr.core.credentials import mint_backup_credential, os_ca_from_machine_secrets

    ca_cert, ca_key = os_ca_from_machine_secrets(machine_secrets)
    return mint_backup_credential(ca_cert, ca_key, now, cluster=cluster).to_json()


# --- the component -------------------------------------------------------------------------------------------------


@dataclass
class SnapshotScheduleArgs:
    vpc_id: pulumi.Input[str]
    subnet_id: pulumi.Input[str]
    node_security_group_id: pulumi.Input[str]
    route_table_id: pulumi.Input[str]
    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    node_private_ip: pulumi.Input[str]
    machine_secrets: pulumi.Input[Any]  # talos.machine.Secrets(...).machine_secrets (a secret)
    cluster_name: str
    region: str
    schedule_expression: str = "rate(1 hour)"
    snapshot_prefix: str = DEFAULT_SNAPSHOT_PREFIX
    code: pulumi.Archive | None = None  # default: lambda_package(wheel_dir)
    wheel_dir: str | None = None  # pre-downloaded wheels (offline machines); config snapshotLambdaWheelDir
    prove: bool = True  # create EtcdSnapshotSchedule (a snapshot at deploy time, staleness at preview)
    now: datetime | None = None  # picks the credential's rotation period; default: the clock
    account_id: pulumi.Input[str] | None = None  # for the scheduler role's confused-deputy condition
    # What must exist before the proving snapshot (the Talos bootstrap: etcd must be running).
    ready: Sequence[pulumi.Resource] = ()
    tags: Mapping[str, str] = field(default_factory=dict)


class SnapshotSchedule(pulumi.ComponentResource):
    function_name: pulumi.Output[str]
    function_arn: pulumi.Output[str]
    secret_arn: pulumi.Output[str]
    schedule_arn: pulumi.Output[str]
    newest_snapshot_key: pulumi.Output[Any]
    newest_snapshot_time: pulumi.Output[Any]
    backups: pulumi.Output[Any]

    def __init__(self, name: str, args: SnapshotScheduleArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("talos-dr:schedule:SnapshotSchedule", name, None, opts)
        from dr.core.freshness import schedule_interval
        from infra.providers.backup_check import EtcdSnapshotSchedule, EtcdSnapshotScheduleArgs

        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.tags)
        interval = schedule_interval(args.schedule_expression)  # validates before anything is created
        now = args.now or datetime.now(UTC)
        prefix = args.snapshot_prefix

        # --- the credential -------------------------------------------------------------------------------
        secret = aws.secretsmanager.Secret(
            f"{name}-credential",
            description=f"Talos os:etcd:backup client certificate for {args.cluster_name}'s scheduled etcd snapshots",
            recovery_window_in_days=7,
            tags=tags,
            opts=child,
        )
        value: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.from_input(args.machine_secrets).apply(
                lambda ms: credential_json(ms, args.cluster_name, now)
            )
        )
        secret_version = aws.secretsmanager.SecretVersion(
            f"{name}-credential-version", secret_id=secret.id, secret_string=value, opts=child
        )

        # --- network ----------------------------------------------------------------------------------------
        lambda_sg = aws.ec2.SecurityGroup(
            f"{name}-lambda-sg",
            vpc_id=args.vpc_id,
            description="Scheduled etcd snapshot Lambda: out to apid, S3 and Secrets Manager only",
            tags={**tags, "Name": f"{name}-lambda-sg"},
            opts=child,
        )
        endpoint_sg = aws.ec2.SecurityGroup(
            f"{name}-endpoint-sg",
            vpc_id=args.vpc_id,
            description="Secrets Manager endpoint: HTTPS from the snapshot Lambda",
            tags={**tags, "Name": f"{name}-endpoint-sg"},
            opts=child,
        )
        apid_rule = aws.vpc.SecurityGroupIngressRule(
            f"{name}-apid-from-lambda",
            security_group_id=args.node_security_group_id,
            referenced_security_group_id=lambda_sg.id,
            ip_protocol="tcp",
            from_port=APID_PORT,
            to_port=APID_PORT,
            description="apid from the scheduled snapshot Lambda",
            opts=child,
        )
        s3_endpoint = aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=args.vpc_id,
            service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[args.route_table_id],
            tags={**tags, "Name": f"{name}-s3"},
            opts=child,
        )
        sm_endpoint = aws.ec2.VpcEndpoint(
            f"{name}-secretsmanager",
            vpc_id=args.vpc_id,
            service_name=f"com.amazonaws.{args.region}.secretsmanager",
            vpc_endpoint_type="Interface",
            subnet_ids=[args.subnet_id],
            security_group_ids=[endpoint_sg.id],
            private_dns_enabled=True,
            tags={**tags, "Name": f"{name}-secretsmanager"},
            opts=child,
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-endpoint-from-lambda",
            security_group_id=endpoint_sg.id,
            referenced_security_group_id=lambda_sg.id,
            ip_protocol="tcp",
            from_port=443,
            to_port=443,
            opts=child,
        )
        egress = [
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-lambda-to-apid",
                security_group_id=lambda_sg.id,
                referenced_security_group_id=args.node_security_group_id,
                ip_protocol="tcp",
                from_port=APID_PORT,
                to_port=APID_PORT,
                opts=child,
            ),
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-lambda-to-s3",
                security_group_id=lambda_sg.id,
                prefix_list_id=s3_endpoint.prefix_list_id,
                ip_protocol="tcp",
                from_port=443,
                to_port=443,
                opts=child,
            ),
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-lambda-to-secretsmanager",
                security_group_id=lambda_sg.id,
                referenced_security_group_id=endpoint_sg.id,
                ip_protocol="tcp",
                from_port=443,
                to_port=443,
                opts=child,
            ),
        ]

        # --- the runner -----------------------------------------------------------------------------------------
        role = aws.iam.Role(
            f"{name}-lambda-role",
            assume_role_policy=assume_role_policy("lambda.amazonaws.com"),
            description="Scheduled etcd snapshots: write snapshots, read the backup credential",
            tags=tags,
            opts=child,
        )
        vpc_access = aws.iam.RolePolicyAttachment(
            f"{name}-lambda-vpc-access",
            role=role.name,
            policy_arn="arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole",
            opts=child,
        )
        role_policy = aws.iam.RolePolicy(
            f"{name}-lambda-policy",
            role=role.id,
            policy=pulumi.Output.all(args.bucket_arn, secret.arn).apply(lambda a: lambda_policy(a[0], prefix, a[1])),
            opts=child,
        )
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs", name=f"/talos-dr/{name}/snapshots", retention_in_days=30, tags=tags, opts=child
        )
        code = args.code if args.code is not None else lambda_package(args.wheel_dir)
        function = aws.lambda_.Function(
            f"{name}-snapshot",
            runtime=LAMBDA_RUNTIME,
            architectures=["x86_64"],
            handler=LAMBDA_HANDLER,
            role=role.arn,
            code=code,
            timeout=900,
            memory_size=512,  # CPU scales with memory; the stream holds a few 8 MiB parts at most
            vpc_config={"subnet_ids": [args.subnet_id], "security_group_ids": [lambda_sg.id]},
            logging_config={"log_format": "Text", "log_group": log_group.name},
            environment={
                "variables": {
                    lh.ENV_BUCKET: args.bucket_name,
                    lh.ENV_NODE: args.node_private_ip,
                    lh.ENV_SECRET_ID: secret.arn,
                    lh.ENV_CLUSTER: args.cluster_name,
                    lh.ENV_PREFIX: prefix,
                    lh.ENV_PORT: str(APID_PORT),
                }
            },
            description=f"etcd snapshot of {args.cluster_name} to S3 ({args.schedule_expression})",
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[vpc_access, role_policy]),
        )

        # Scheduler invokes asynchronously; without this Lambda would retry a failed run twice more on its own, on top
        # of the schedule's retry policy (up to 9 runs). One retry layer: the schedule's.
        aws.lambda_.FunctionEventInvokeConfig(
            f"{name}-snapshot-async",
            function_name=function.name,
            maximum_retry_attempts=0,
            maximum_event_age_in_seconds=3600,
            opts=child,
        )

        # --- the schedule ---------------------------------------------------------------------------------------
        scheduler_role = aws.iam.Role(
            f"{name}-scheduler-role",
            assume_role_policy=pulumi.Output.from_input(args.account_id).apply(
                lambda acct: assume_role_policy("scheduler.amazonaws.com", acct)
            ),
            description="EventBridge Scheduler: invoke the etcd snapshot Lambda",
            tags=tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-scheduler-policy", role=scheduler_role.id, policy=function.arn.apply(invoke_policy), opts=child
        )
        schedule = aws.scheduler.Schedule(
            f"{name}-schedule",
            description=f"etcd snapshots of {args.cluster_name}",
            schedule_expression=args.schedule_expression,
            schedule_expression_timezone="UTC",
            flexible_time_window={"mode": "OFF"},
            state="ENABLED",
            target={
                "arn": function.arn,
                "role_arn": scheduler_role.arn,
                "input": json.dumps({"trigger": "schedule"}),
                "retry_policy": {"maximum_retry_attempts": 2, "maximum_event_age_in_seconds": 3600},
            },
            opts=child,
        )

        # --- proof and staleness --------------------------------------------------------------------------------
        watch = None
        if args.prove:
            watch = EtcdSnapshotSchedule(
                f"{name}-watch",
                EtcdSnapshotScheduleArgs(
                    bucket=args.bucket_name,
                    interval_seconds=int(interval.total_seconds()),
                    prefix=prefix,
                    region=args.region,
                    cluster=args.cluster_name,
                    function_name=function.name,
                    log_group=log_group.name,
                ),
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=[function, secret_version, apid_rule, s3_endpoint, sm_endpoint, *egress, schedule,
                                *args.ready],
                ),
            )

        self.function_name = function.name
        self.function_arn = function.arn
        self.secret_arn = secret.arn
        self.schedule_arn = schedule.arn
        self.newest_snapshot_key = watch.newest_snapshot_key if watch else pulumi.Output.from_input(None)
        self.newest_snapshot_time = watch.newest_snapshot_time if watch else pulumi.Output.from_input(None)
        self.backups = watch.backups if watch else pulumi.Output.from_input(None)
        self.register_outputs(
            {
                "function_name": self.function_name,
                "function_arn": self.function_arn,
                "secret_arn": self.secret_arn,
                "schedule_arn": self.schedule_arn,
                "newest_snapshot_key": self.newest_snapshot_key,
                "newest_snapshot_time": self.newest_snapshot_time,
                "backups": self.backups,
            }
        )


__all__ = [
    "LAMBDA_REQUIREMENTS",
    "PackageError",
    "SnapshotSchedule",
    "SnapshotScheduleArgs",
    "build_package",
    "ensure_wheels",
    "find_wheels",
    "invoke_policy",
    "lambda_package",
    "lambda_policy",
]
