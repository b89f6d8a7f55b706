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
* the Lambda (``snapshot_lambda.handler.handler``, python3.13 x86_64: ``LAMBDA_RUNTIME``) with a role allowed to write, tag and read back
  snapshot keys, list the prefix, read its credential object, and manage its VPC ENIs — never delete;
* an EventBridge Scheduler schedule (``snapshotSchedule``) in its own schedule group, whose role may only invoke this
  function and may be assumed only for that group (``aws:SourceArn``);
* retries: Lambda's asynchronous retries, bounded so none reaches the next scheduled run (``retry_settings``), and a
  failed-runs SQS queue as the on-failure destination (the Lambda role may send to it, nothing else), which
  ``infra/alarms.py`` watches; each run prints its metrics as CloudWatch Embedded Metric Format (``dr.core.metrics``);
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
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from dr.adapters.fsutil import atomic_writer
from dr.adapters.talosapi import APID_PORT
from dr.core.etcd_health import DEFAULT_QUOTA_BYTES as DEFAULT_ETCD_QUOTA_BYTES
from dr.core.metrics import NAMESPACE as METRICS_NAMESPACE
from dr.core.naming import PREFIX as SNAPSHOT_NAME_PREFIX
from dr.core.outputs import DEFAULT_SNAPSHOT_PREFIX
from dr.core.timefmt import iso_utc
from infra.bucket import CREDENTIAL_KEY, LATEST_NAME
from snapshot_lambda import handler as lh

ROOT = Path(__file__).resolve().parent.parent
# The runtime and its end, from AWS Lambda's runtime table ("Building Lambda functions with Python",
# https://docs.aws.amazon.com/lambda/latest/dg/lambda-python.html): python3.13 on Amazon Linux 2023, deprecated
# 2029-06-30, creating functions blocked from 2029-07-31, updating them from 2029-08-31. (python3.11 was blocked
# for creation on 2026-07-31 and for updates on 2026-08-31: round-3 review pulumi-aws.md B1.) `pulumi preview` warns
# from RUNTIME_WARNING_DAYS before the deprecation (runtime_end_warning), as it does for the credential.
LAMBDA_RUNTIME = "python3.13"
LAMBDA_PYTHON = "3.13"
RUNTIME_DEPRECATED = date(2029, 6, 30)
RUNTIME_CREATE_BLOCKED = date(2029, 7, 31)
RUNTIME_UPDATE_BLOCKED = date(2029, 8, 31)
RUNTIME_WARNING_DAYS = 180
# Amazon Linux 2023's glibc: a manylinux wheel needing a newer one cannot load there (PEP 600 manylinux_X_Y).
LAMBDA_GLIBC = (2, 34)
LAMBDA_HANDLER = "snapshot_lambda.handler.handler"
# What the Lambda needs: the h2 transport (pure Python; grpcio is not used there because it cannot handshake with
# Talos's Ed25519 apid key) and protobuf for the messages. cryptography is left out on purpose: the runner only uses
# it for an optional local expiry check, and it would drag cffi along. pyrage and backports.zstd encrypt and compress
# what it stores (dr.adapters.store), as dr.backup does.
LAMBDA_REQUIREMENTS_DIRECT: tuple[str, ...] = ("h2==4.3.0", "hpack==4.1.0", "hyperframe==6.1.0", "protobuf==6.33.6",
                                               "pyrage==1.4.0", "backports.zstd==1.8.0")
# The AWS SDK ships in the package, pinned as the project tests it (requirements.lock), with its pure-Python
# dependencies: the runtime's bundled boto3 "depends on the runtime version and your Region" and the store passes
# IfNoneMatch to PutObject/CompleteMultipartUpload, which botocore only accepts from 1.35 (round-3 review
# pulumi-aws.md minor 3). The package's copy wins: Lambda searches $LAMBDA_TASK_ROOT (/var/task, the zip) first, and
# "your version will take precedence over the version that's included in the runtime"
# (https://docs.aws.amazon.com/lambda/latest/dg/python-image.html, "Dependency search path"); the handler also
# checks at run time that botocore came from the package (snapshot_lambda.handler.check_sdk).
LAMBDA_REQUIREMENTS_SDK: tuple[str, ...] = ("boto3==1.44.5", "botocore==1.44.8", "s3transfer==0.19.3",
                                            "jmespath==1.1.0", "python-dateutil==2.9.0.post0", "six==1.17.0",
                                            "urllib3==2.8.0")
LAMBDA_REQUIREMENTS: tuple[str, ...] = LAMBDA_REQUIREMENTS_DIRECT + LAMBDA_REQUIREMENTS_SDK
# Each wheel's SHA-256 must be one this lock lists for its pinned version (pip-compile --generate-hashes records every
# file published for a version, so the Lambda platform's manylinux/py3 wheel is among them). Whatever put a wheel in
# the cache or wheel folder, one whose hash is not listed is refused.
LOCK_FILE = ROOT / "requirements.lock"
LAMBDA_PLATFORM = "manylinux2014_x86_64"
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


def _platform_loads(platform: str) -> bool:
    """One platform tag the Lambda (x86_64, Amazon Linux 2023, glibc 2.34) can load: ``any``, or a manylinux tag for
    x86_64 whose glibc is not newer than the runtime's (PEP 600 manylinux_X_Y; the legacy aliases of PEP 513/571/599
    are glibc 2.5/2.12/2.17)."""
    if platform == "any":
        return True
    legacy = {"manylinux1_x86_64": (2, 5), "manylinux2010_x86_64": (2, 12), "manylinux2014_x86_64": (2, 17)}
    if platform in legacy:
        return legacy[platform] <= LAMBDA_GLIBC
    m = re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64", platform)
    return m is not None and (int(m.group(1)), int(m.group(2))) <= LAMBDA_GLIBC


def _interpreter_loads(python: str, abi: str) -> bool:
    """One (python tag, abi tag) pair CPython 3.13 (the GIL build Lambda runs) can load (PEP 425/PEP 384)."""
    major, minor = (int(x) for x in LAMBDA_PYTHON.split("."))
    cp = f"cp{major}{minor}"
    if abi == "none":  # pure Python, or an interpreter-specific build with no ABI dependency
        m = re.fullmatch(r"(py|cp)(\d)(\d*)", python)
        return m is not None and int(m.group(2)) == major and (not m.group(3) or int(m.group(3)) <= minor)
    if abi == "abi3":  # the stable ABI of CPython 3.N works on every later 3.x
        m = re.fullmatch(r"cp(\d)(\d+)", python)
        return m is not None and int(m.group(1)) == major and int(m.group(2)) <= minor
    return python == cp and abi == cp  # cp313t (free-threaded) or another version's ABI cannot load


def tag_loads(tag: str) -> bool:
    """Whether one wheel tag ``python-abi-platform`` (as in a wheel's WHEEL file) loads on the Lambda runtime."""
    parts = tag.split("-")
    if len(parts) != 3:
        return False
    return _interpreter_loads(parts[0], parts[1]) and _platform_loads(parts[2])


def wheel_tags(wheel_name: str) -> list[str]:
    """The tags a wheel file name carries, its compressed tag sets expanded (PEP 425 "Compressed Tag Sets")."""
    parts = wheel_name[: -len(".whl")].split("-") if wheel_name.endswith(".whl") else []
    if len(parts) < 5:
        return []
    pythons, abis, platforms = (p.split(".") for p in parts[-3:])
    return [f"{py}-{abi}-{plat}" for py in pythons for abi in abis for plat in platforms]


def lambda_compatible(wheel_name: str) -> bool:
    """Whether a wheel (by its file name tags) loads on the Lambda runtime (LAMBDA_RUNTIME, x86_64): one of its tags
    must be CPython 3.13's own ABI or the stable ABI of 3.13 or older, or pure Python 3, on manylinux x86_64 up to
    glibc 2.34 or ``any``. Nothing else: no other CPython version, no musl, macOS, Windows or aarch64."""
    return any(tag_loads(t) for t in wheel_tags(wheel_name))


_EXT_SUFFIX = re.compile(r"\.(cpython-(\d+)([a-z]*)-[^./]+|abi3)\.so$")


def package_problems(files: Mapping[str, bytes]) -> list[str]:
    """What in a package's files (path -> bytes) the Lambda runtime cannot load: a wheel whose ``*.dist-info/WHEEL``
    names no tag the runtime loads, or an extension module built for another CPython (``*.cpython-311-...so``)."""
    problems = []
    for name, data in sorted(files.items()):
        if name.endswith(".dist-info/WHEEL"):
            tags = [line.split(":", 1)[1].strip() for line in data.decode("utf-8", "replace").splitlines()
                    if line.lower().startswith("tag:")]
            if not any(tag_loads(t) for t in tags):
                problems.append(f"{name.split('/')[0]} is built for {', '.join(tags) or 'no tag'}")
        m = _EXT_SUFFIX.search(name)
        if m and m.group(2) is not None and (m.group(2) != LAMBDA_PYTHON.replace(".", "") or m.group(3)):
            problems.append(f"{name} is an extension module for another CPython ({m.group(1)})")
    return problems


def runtime_end_warning(now: datetime, days: int = RUNTIME_WARNING_DAYS) -> str | None:
    """The warning `pulumi preview` shows from ``days`` before the runtime's deprecation (None before that)."""
    today = now.astimezone(UTC).date()
    if (RUNTIME_DEPRECATED - today).days > days:
        return None
    if today >= RUNTIME_UPDATE_BLOCKED:
        state = f"has been blocked for updates since {RUNTIME_UPDATE_BLOCKED}: `pulumi up` cannot change the function"
    elif today >= RUNTIME_CREATE_BLOCKED:
        state = (f"cannot be used for new functions since {RUNTIME_CREATE_BLOCKED} and is blocked for updates from "
                 f"{RUNTIME_UPDATE_BLOCKED}")
    else:
        state = (f"is deprecated by AWS on {RUNTIME_DEPRECATED}, blocked for new functions from "
                 f"{RUNTIME_CREATE_BLOCKED} and for updates from {RUNTIME_UPDATE_BLOCKED}")
    return (f"the snapshot Lambda's runtime {LAMBDA_RUNTIME} {state}; move LAMBDA_RUNTIME in infra/schedule.py to a "
            "newer Python (https://docs.aws.amazon.com/lambda/latest/dg/lambda-python.html) and run `pulumi up`")


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
    problems = package_problems(files)
    if problems:  # a wheel the runtime cannot import fails every run: refuse the package instead
        raise PackageError(f"the snapshot Lambda package would hold what {LAMBDA_RUNTIME} cannot load: "
                           f"{'; '.join(problems)}; delete those wheels from the wheel folder and run `pulumi up` again")
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


# --- retries (pure) ---------------------------------------------------------------------------------------------

# The function's own limit; the runner stops its stream earlier (snapshot_lambda.handler ENV_TIMEOUT, 840 s).
LAMBDA_TIMEOUT = 900
# How long EventBridge Scheduler may keep retrying the delivery (its minimum maximum_event_age_in_seconds).
SCHEDULER_DELIVERY_WINDOW = 60
# Lambda's bounds for MaximumEventAgeInSeconds (PutFunctionEventInvokeConfig: 60 to 21600).
_EVENT_AGE_MIN, _EVENT_AGE_MAX = 60, 21600
# How long a failed-run record stays in the queue (SQS's maximum, 14 days): long enough to read after a holiday.
FAILED_RUN_RETENTION_SECONDS = 14 * 86400


@dataclass(frozen=True)
class RetrySettings:
    """Who retries a scheduled run, and for how long. Two AWS layers exist and cover different failures:

    * EventBridge Scheduler invokes the function asynchronously ("EventBridge Scheduler invokes your Lambda function
      asynchronously", https://docs.aws.amazon.com/lambda/latest/dg/with-eventbridge-scheduler.html). Its retry
      policy applies only when it "is unable to deliver an event successfully to a target"
      (https://docs.aws.amazon.com/scheduler/latest/UserGuide/managing-schedule-retry-policy.html): an accepted
      asynchronous Invoke is a delivered event, whatever the function then does. So it retries delivery only, within
      ``scheduler_max_age`` seconds (its minimum).
    * Lambda retries the function's own errors (timeouts included) "two more times, with a one-minute wait between
      the first two attempts, and two minutes between the second and third", and drops an event older than
      MaximumEventAgeInSeconds (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html,
      invocation-async-configuring.html). This is the layer that retries a failed snapshot.

    Bounds: an event delivered at most ``scheduler_max_age`` after the schedule fired is retried by Lambda at most
    ``lambda_max_age`` after that, and a retry runs at most the function timeout; the three add up to no more than
    the schedule's interval, so a retry never lands on (or after) the next scheduled run. When the interval is too
    short for that, Lambda does not retry: the next scheduled run is the retry."""

    lambda_attempts: int
    lambda_max_age: int
    scheduler_attempts: int
    scheduler_max_age: int


def retry_settings(interval_seconds: int, timeout_seconds: int = LAMBDA_TIMEOUT) -> RetrySettings:
    """The retry layers for a schedule firing every ``interval_seconds`` (see ``RetrySettings``)."""
    window = interval_seconds - timeout_seconds - SCHEDULER_DELIVERY_WINDOW
    if window >= _EVENT_AGE_MIN:
        return RetrySettings(2, min(window, _EVENT_AGE_MAX), 2, SCHEDULER_DELIVERY_WINDOW)
    # Retries could overlap the next run: none from Lambda; the event age still may not pass the interval.
    age = max(_EVENT_AGE_MIN, min(interval_seconds - SCHEDULER_DELIVERY_WINDOW, _EVENT_AGE_MAX))
    return RetrySettings(0, age, 2, SCHEDULER_DELIVERY_WINDOW)


def destination_policy(queue_arn: str) -> str:
    """The runner's permission to record an exhausted run in its failed-runs queue: Lambda sends an asynchronous
    invocation's on-failure record with the function's execution role
    (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html, "Permissions")."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Sid": "RecordFailedRuns", "Effect": "Allow", "Action": ["sqs:SendMessage"],
                           "Resource": [queue_arn]}],
        },
        sort_keys=True,
    )


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
    # The node's etcd quota (--quota-backend-bytes): the runner reports its DB size against it (etcd's default 2 GiB).
    etcd_quota_bytes: int = DEFAULT_ETCD_QUOTA_BYTES
    object_lock: bool = False  # snapshotObjectLockDays > 0: the credential object is deleted with the governance bypass
    tags: Mapping[str, str] = field(default_factory=dict)


class SnapshotSchedule(pulumi.ComponentResource):
    function_name: pulumi.Output[str]
    function_arn: pulumi.Output[str]
    role_arn: pulumi.Output[str]  # the Lambda's role: the bucket policy names it as a reader
    credential_key: pulumi.Output[str]
    credential_not_after: pulumi.Output[str]
    schedule_arn: pulumi.Output[str]
    failed_runs_queue_name: pulumi.Output[str]
    failed_runs_queue_arn: pulumi.Output[str]
    log_group_name: pulumi.Output[str]
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
        retries = retry_settings(int(interval.total_seconds()))
        now = args.now or datetime.now(UTC)
        prefix = args.snapshot_prefix
        runtime_warning = runtime_end_warning(now)
        if runtime_warning:
            pulumi.log.warn(runtime_warning, resource=self)

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
        # Where an exhausted run is recorded (the on-failure destination below); kept 14 days, encrypted at rest.
        failed_runs = aws.sqs.Queue(
            f"{name}-failed-runs-queue",
            message_retention_seconds=FAILED_RUN_RETENTION_SECONDS,
            sqs_managed_sse_enabled=True,
            tags=tags,
            opts=child,
        )
        destination_access = aws.iam.RolePolicy(
            f"{name}-lambda-destination-policy",
            role=role.id,
            policy=failed_runs.arn.apply(destination_policy),
            opts=child,
        )
        code = args.code if args.code is not None else lambda_package(args.wheel_dir)
        function = aws.lambda_.Function(
            f"{name}-snapshot",
            runtime=LAMBDA_RUNTIME,
            architectures=["x86_64"],
            handler=LAMBDA_HANDLER,
            role=role.arn,
            code=code,
            timeout=LAMBDA_TIMEOUT,
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
                    lh.ENV_STALL_TIMEOUT: str(int(lh.DEFAULT_STALL_TIMEOUT)),
                    lh.ENV_METRICS_NAMESPACE: METRICS_NAMESPACE,
                    lh.ENV_ETCD_QUOTA: str(args.etcd_quota_bytes),
                }
            },
            description=f"etcd snapshot of {args.cluster_name} to S3 ({args.schedule_expression})",
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[vpc_access, role_policy, association]),
        )

        # One retry layer for the function's failures: Lambda's asynchronous retries (retry_settings says what AWS does
        # and why they never reach the next run). A run that fails every attempt (or whose event grows too old) is
        # recorded in the failed-runs queue, which infra/alarms.py watches.
        aws.lambda_.FunctionEventInvokeConfig(
            f"{name}-snapshot-async",
            function_name=function.name,
            maximum_retry_attempts=retries.lambda_attempts,
            maximum_event_age_in_seconds=retries.lambda_max_age,
            destination_config={"on_failure": {"destination": failed_runs.arn}},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[destination_access]),
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
                # Delivery only (retry_settings): the function's failures are Lambda's to retry.
                "retry_policy": {"maximum_retry_attempts": retries.scheduler_attempts,
                                 "maximum_event_age_in_seconds": retries.scheduler_max_age},
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
        self.failed_runs_queue_name = failed_runs.name
        self.failed_runs_queue_arn = failed_runs.arn
        self.log_group_name = log_group.name
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
                "failed_runs_queue_name": self.failed_runs_queue_name,
                "failed_runs_queue_arn": self.failed_runs_queue_arn,
                "log_group_name": self.log_group_name,
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
