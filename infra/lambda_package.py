"""The snapshot Lambda's deployment package: which wheels it needs (pinned, each checked against the SHA-256s
``requirements.lock`` lists), where they come from (a cache directory filled by ``pip download`` on first use, or a
folder pre-populated for offline machines), which of them the Lambda platform can load, and a deterministic zip of
them plus the project's own modules the handler imports (sorted entries, fixed timestamps and modes), so the same
sources give the same bytes and ``pulumi up`` shows no change.

Pure functions over directories; the only Pulumi name is the ``FileArchive`` that ``lambda_package`` returns.
``infra/schedule.py`` deploys the package.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import pulumi

from dr.adapters.fsutil import atomic_writer

ROOT = Path(__file__).resolve().parent.parent
# The runtime and its end, from AWS Lambda's runtime table ("Building Lambda functions with Python",
# https://docs.aws.amazon.com/lambda/latest/dg/lambda-python.html): python3.13 on Amazon Linux 2023, deprecated
# 2029-06-30, creating functions blocked from 2029-07-31, updating them from 2029-08-31. (python3.11, the runtime
# before it, was blocked for creation on 2026-07-31 and for updates on 2026-08-31: a runtime's end date is an outage
# date for `pulumi up`, so it is written here and watched.) `pulumi preview` warns
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
# IfNoneMatch to PutObject/CompleteMultipartUpload, which botocore only accepts from 1.35 (a runtime that
# bundled an older one would refuse every upload). The package's copy wins: Lambda searches $LAMBDA_TASK_ROOT (/var/task, the zip) first, and
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
    return (f"the snapshot Lambda's runtime {LAMBDA_RUNTIME} {state}; move LAMBDA_RUNTIME in infra/lambda_package.py to a "
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
