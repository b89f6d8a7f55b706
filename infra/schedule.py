"""Scheduled etcd snapshots: a Lambda in the node's VPC streams a snapshot to S3 every hour, with the least
privilege Talos allows (an ``os:etcd:backup`` client certificate), and ``pulumi preview`` says when backups are stale.

Resources (children of ``SnapshotSchedule``):

* the credential: an object in the backup bucket (``infra.bucket.CREDENTIAL_KEY``, SSE-S3) holding a deterministic
  ``os:etcd:backup`` certificate minted from the OS CA in the machine secrets (``dr.core.credentials``: same bytes on
  every ``up`` within a 180-day period, so no diff); the bucket policy lets only the Lambda's role and the deployer
  read it. (It was a Secrets Manager secret behind a $7.30/month interface endpoint; the bucket already holds every
  etcd byte the credential can read, see README "What the credential can do".)
* network: the Lambda's own subnet (no route out of the VPC) and route table with an S3 *gateway* endpoint whose
  policy allows this bucket only (free, no NAT; the node's route table is left alone, so the node's own S3 traffic,
  image pulls included, is not filtered); the Lambda's own security group; an ingress rule on the node's group
  admitting 50000/tcp from it;
* the Lambda (``snapshot_lambda.handler.handler``, python3.11 x86_64) with a role allowed to write, tag and read back
  snapshot keys, list the prefix, read its credential object, and manage its VPC ENIs — never delete;
* an EventBridge Scheduler schedule (``snapshotSchedule``) in its own schedule group, whose role may only invoke this
  function and may be assumed only for that group (``aws:SourceArn``);
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
import ipaddress
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
from dr.core.naming import PREFIX as SNAPSHOT_NAME_PREFIX
from dr.core.outputs import DEFAULT_SNAPSHOT_PREFIX
from dr.core.timefmt import iso_utc
from infra.bucket import CREDENTIAL_KEY, LATEST_NAME
from snapshot_lambda import handler as lh

ROOT = Path(__file__).resolve().parent.parent
LAMBDA_RUNTIME = "python3.11"
LAMBDA_HANDLER = "snapshot_lambda.handler.handler"
# What the Lambda needs beyond the runtime's own boto3: the h2 transport (pure Python; grpcio is not used there
# because it cannot handshake with Talos's Ed25519 apid key) and protobuf for the messages. cryptography is left
# out on purpose: the runner only uses it for an optional local expiry check, and it would drag cffi along.
# pyrage and backports.zstd encrypt and compress what it stores (dr.adapters.store), as dr.backup does.
LAMBDA_REQUIREMENTS: tuple[str, ...] = ("h2==4.3.0", "hpack==4.1.0", "hyperframe==6.1.0", "protobuf==6.33.6",
                                        "pyrage==1.4.0", "backports.zstd==1.8.0")
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
    # A wheel file name spells the project with runs of "-", "_" and "." as one "_" (PEP 427, binary distribution
    # format: "escaped" names), so backports.zstd ships as backports_zstd-1.8.0-....whl.
    return re.sub(r"[-_.]+", "_", requirement.split("==")[0].strip()).lower()


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


def lambda_policy(bucket_arn: str, prefix: str, credential_key: str) -> str:
    """The runner's inline policy: create, tag and read back snapshot objects, copy the newest to ``<prefix>latest``,
    list the prefix (the retention tier depends on what is there, dr.core.tiers), read its credential object.

    No s3:DeleteObject, nothing outside the snapshot keys, ``latest`` and the credential. GetObject on the snapshot
    keys stays: a HEAD is authorized as s3:GetObject, and so is reading a CopyObject's source
    (https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html, API_CopyObject.html "Permissions"). It
    gives the role nothing its credential does not: every byte of a snapshot is etcd, which os:etcd:backup reads.
    """
    snapshots = f"{bucket_arn}/{prefix}*{SNAPSHOT_NAME_PREFIX}*"
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "WriteSnapshots",
                    "Effect": "Allow",
                    "Action": ["s3:PutObject", "s3:AbortMultipartUpload", "s3:PutObjectTagging"],
                    "Resource": [snapshots, f"{bucket_arn}/{prefix}{LATEST_NAME}"],
                },
                {
                    "Sid": "ReadBackSnapshots",
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:GetObjectTagging"],
                    "Resource": [snapshots],
                },
                {
                    "Sid": "ListSnapshots",
                    "Effect": "Allow",
                    "Action": ["s3:ListBucket"],
                    "Resource": [bucket_arn],
                    "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}},
                },
                {
                    "Sid": "ReadBackupCredential",
                    "Effect": "Allow",
                    "Action": ["s3:GetObject"],
                    "Resource": [f"{bucket_arn}/{credential_key}"],
                },
            ],
        },
        sort_keys=True,
    )


def endpoint_policy(bucket_arn: str) -> str:
    """The Lambda subnet's S3 gateway endpoint policy: this bucket only (security review L1), so a compromised
    Lambda cannot copy snapshots out to a bucket of its own; the subnet has no other way out."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "ThisBucketOnly",
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": ["s3:GetObject", "s3:GetObjectTagging", "s3:PutObject", "s3:PutObjectTagging",
                               "s3:AbortMultipartUpload", "s3:ListBucket"],
                    "Resource": [bucket_arn, f"{bucket_arn}/*"],
                }
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


def assume_role_policy(service: str, account_id: str | None = None, source_arns: Sequence[str] = ()) -> str:
    stmt: dict[str, Any] = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    condition: dict[str, Any] = {}
    if account_id:  # confused-deputy guard: only schedules in this account may assume the role
        condition["StringEquals"] = {"aws:SourceAccount": account_id}
    if source_arns:  # ... and only for this stack's schedule (security review L6)
        condition["ArnLike"] = {"aws:SourceArn": list(source_arns)}
    if condition:
        stmt["Condition"] = condition
    return json.dumps({"Version": "2012-10-17", "Statement": [stmt]}, sort_keys=True)


def schedule_source_arns(group_arn: str) -> list[str]:
    """What aws:SourceArn may be when EventBridge Scheduler assumes the role: this stack's own schedule group, or a
    schedule in it. The Scheduler guide's execution-role setup
    (https://docs.aws.amazon.com/scheduler/latest/UserGuide/setting-up.html, "Set up the execution role") guards the
    trust with aws:SourceAccount and aws:SourceArn; which of the two ARNs the service sends is not quoted here
    (not checked against AWS), so both are allowed, and both name only this stack's group."""
    prefix, _, group = group_arn.rpartition(":schedule-group/")
    return [group_arn, f"{prefix}:schedule/{group}/*"]


def lambda_subnet_cidr(vpc_cidr: str, node_subnet_cidr: str, prefixlen: int = 28) -> str:
    """The Lambda's own subnet: the last ``/prefixlen`` of the VPC that does not overlap the node's subnet."""
    vpc = ipaddress.IPv4Network(vpc_cidr)  # the VPC and its subnets are IPv4 (infra/config.py checks it)
    node = ipaddress.IPv4Network(node_subnet_cidr)
    for candidate in reversed(list(vpc.subnets(new_prefix=prefixlen))):
        if not candidate.overlaps(node):
            return str(candidate)
    raise ValueError(f"no /{prefixlen} in {vpc_cidr} outside the node subnet {node_subnet_cidr} for the snapshot Lambda")


def credential_json(machine_secrets: Mapping[str, Any], cluster: str, now: datetime) -> str:
    """The credential object's content: the deterministic os:etcd:backup credential for ``now``'s rotation period."""
    from dr.core.credentials import mint_backup_credential, os_ca_from_machine_secrets

    ca_cert, ca_key = os_ca_from_machine_secrets(machine_secrets)
    return mint_backup_credential(ca_cert, ca_key, now, cluster=cluster).to_json()


def credential_not_after(credential: str) -> str:
    """The certificate's end in a credential JSON, ISO 8601 UTC (what ``pulumi preview`` watches)."""
    from dr.adapters.talosapi import TalosCredentials
    from dr.core.cert_expiry import not_after

    return iso_utc(not_after(TalosCredentials.from_json(credential).cert_pem))


# --- the component -------------------------------------------------------------------------------------------------


@dataclass
class SnapshotScheduleArgs:
    vpc_id: pulumi.Input[str]
    availability_zone: pulumi.Input[str]  # the node's: the Lambda's subnet goes there (no cross-AZ transfer)
    lambda_subnet_cidr: str  # the Lambda's own subnet, inside the VPC, outside the node's (lambda_subnet_cidr())
    node_security_group_id: pulumi.Input[str]
    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    node_private_ip: pulumi.Input[str]
    machine_secrets: pulumi.Input[Any]  # talos.machine.Secrets(...).machine_secrets (a secret)
    cluster_name: str
    region: str
    schedule_expression: str = "rate(1 hour)"
    snapshot_prefix: str = DEFAULT_SNAPSHOT_PREFIX
    age_recipients: Sequence[str] = ()  # age public keys the Lambda encrypts to (config ageRecipients)
    code: pulumi.Archive | None = None  # default: lambda_package(wheel_dir)
    wheel_dir: str | None = None  # pre-downloaded wheels (offline machines); config snapshotLambdaWheelDir
    prove: bool = True  # create EtcdSnapshotSchedule (a snapshot at deploy time, staleness at preview)
    now: datetime | None = None  # picks the credential's rotation period; default: the clock
    account_id: pulumi.Input[str] | None = None  # for the scheduler role's confused-deputy condition
    # What must exist before the proving snapshot (the Talos bootstrap: etcd must be running).
    ready: Sequence[pulumi.Resource] = ()
    # What must exist before the credential object is written and read (the bucket policy that guards it).
    bucket_ready: Sequence[pulumi.Resource] = ()
    object_lock: bool = False  # snapshotObjectLockDays > 0: the credential object is deleted with the governance bypass
    tags: Mapping[str, str] = field(default_factory=dict)


class SnapshotSchedule(pulumi.ComponentResource):
    function_name: pulumi.Output[str]
    function_arn: pulumi.Output[str]
    role_arn: pulumi.Output[str]  # the Lambda's role: the bucket policy names it as a reader
    credential_key: pulumi.Output[str]
    credential_not_after: pulumi.Output[str]
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
        value: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.from_input(args.machine_secrets).apply(
                lambda ms: credential_json(ms, args.cluster_name, now)
            )
        )
        # Not secret: when the certificate ends (EtcdSnapshotSchedule warns at preview before it does).
        not_after = pulumi.Output.unsecret(value).apply(credential_not_after)
        credential = aws.s3.BucketObjectv2(
            f"{name}-credential-object",
            bucket=args.bucket_name,
            key=CREDENTIAL_KEY,
            content=value,
            content_type="application/json",
            server_side_encryption="AES256",
            # With Object Lock on, S3 wants a checksum on every PUT
            # (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock-managing.html, uploading objects).
            checksum_algorithm="SHA256",
            # `pulumi destroy` removes every version of it (terraform-provider-aws internal/service/s3
            # deleteAllObjectVersions): it holds a certificate that reads all of etcd, and the bucket policy lets the
            # deployer alone delete it. Under Object Lock (governance) each version is locked; force_destroy makes the
            # provider send x-amz-bypass-governance-retention (deleteObjectVersion: `BypassGovernanceRetention =
            # force`), which S3 honours only for a caller with s3:BypassGovernanceRetention
            # (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock-managing.html, bypassing governance
            # mode). docs/VAULT.md, "Destroy".
            force_destroy=args.object_lock,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.bucket_ready)),
        )

        # --- network ----------------------------------------------------------------------------------------
        # The Lambda's own subnet and route table: no internet gateway, no NAT, only the VPC's local route and the S3
        # gateway endpoint, whose policy allows this bucket alone (security review L1). The node keeps its route
        # table to itself, so its own S3 traffic is never filtered by this endpoint.
        subnet = aws.ec2.Subnet(
            f"{name}-lambda-subnet",
            vpc_id=args.vpc_id,
            cidr_block=args.lambda_subnet_cidr,
            availability_zone=args.availability_zone,
            map_public_ip_on_launch=False,
            tags={**tags, "Name": f"{name}-lambda"},
            opts=child,
        )
        route_table = aws.ec2.RouteTable(
            f"{name}-lambda-rt", vpc_id=args.vpc_id, tags={**tags, "Name": f"{name}-lambda"}, opts=child
        )
        association = aws.ec2.RouteTableAssociation(
            f"{name}-lambda-rt-assoc", subnet_id=subnet.id, route_table_id=route_table.id, opts=child
        )
        lambda_sg = aws.ec2.SecurityGroup(
            f"{name}-lambda-sg",
            vpc_id=args.vpc_id,
            description="Scheduled etcd snapshot Lambda: out to apid and S3 only",
            tags={**tags, "Name": f"{name}-lambda-sg"},
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
            route_table_ids=[route_table.id],
            policy=pulumi.Output.from_input(args.bucket_arn).apply(endpoint_policy),
            tags={**tags, "Name": f"{name}-s3"},
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
            policy=pulumi.Output.from_input(args.bucket_arn).apply(lambda arn: lambda_policy(arn, prefix, CREDENTIAL_KEY)),
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
            vpc_config={"subnet_ids": [subnet.id], "security_group_ids": [lambda_sg.id]},
            logging_config={"log_format": "Text", "log_group": log_group.name},
            environment={
                "variables": {
                    lh.ENV_BUCKET: args.bucket_name,
                    lh.ENV_NODE: args.node_private_ip,
                    lh.ENV_CREDENTIAL_KEY: CREDENTIAL_KEY,
                    lh.ENV_CLUSTER: args.cluster_name,
                    lh.ENV_PREFIX: prefix,
                    lh.ENV_PORT: str(APID_PORT),
                    lh.ENV_AGE_RECIPIENTS: ",".join(args.age_recipients),
                }
            },
            description=f"etcd snapshot of {args.cluster_name} to S3 ({args.schedule_expression})",
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[vpc_access, role_policy, association]),
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
        # Its own group, so the scheduler role's trust can name it (aws:SourceArn) before the schedule exists.
        group = aws.scheduler.ScheduleGroup(f"{name}-schedules", tags=tags, opts=child)
        scheduler_role = aws.iam.Role(
            f"{name}-scheduler-role",
            assume_role_policy=pulumi.Output.all(args.account_id, group.arn).apply(
                lambda a: assume_role_policy("scheduler.amazonaws.com", a[0], schedule_source_arns(a[1]))
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
            group_name=group.name,
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
                    credential_not_after=not_after,
                ),
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=[function, credential, apid_rule, s3_endpoint, *egress, schedule, *args.ready],
                ),
            )

        self.function_name = function.name
        self.function_arn = function.arn
        self.role_arn = role.arn
        self.credential_key = pulumi.Output.from_input(CREDENTIAL_KEY)
        self.credential_not_after = not_after
        self.schedule_arn = schedule.arn
        self.newest_snapshot_key = watch.newest_snapshot_key if watch else pulumi.Output.from_input(None)
        self.newest_snapshot_time = watch.newest_snapshot_time if watch else pulumi.Output.from_input(None)
        self.backups = watch.backups if watch else pulumi.Output.from_input(None)
        self.register_outputs(
            {
                "function_name": self.function_name,
                "function_arn": self.function_arn,
                "role_arn": self.role_arn,
                "credential_key": self.credential_key,
                "credential_not_after": self.credential_not_after,
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
    "lambda_subnet_cidr",
]
