"""The Lambda deployment package: deterministic zip from a (fake) wheel dir, clear errors when offline."""

from __future__ import annotations

import hashlib
import os
import random
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from infra import lambda_package as isch

H2 = "h2-4.3.0-py3-none-any.whl"
HPACK = "hpack-4.1.0-py3-none-any.whl"
HYPERFRAME = "hyperframe-6.1.0-py3-none-any.whl"
GRPC = "grpcio-1.85.1-cp313-cp313-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
PROTO = "protobuf-6.33.6-cp39-abi3-manylinux2014_x86_64.whl"
PYRAGE = "pyrage-1.4.0-cp39-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
ZSTD = "backports_zstd-1.8.0-cp313-cp313-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl"
MAC = "grpcio-1.85.1-cp313-cp313-macosx_11_0_universal2.whl"
# The SDK the package ships (LAMBDA_REQUIREMENTS_SDK), as PyPI names its wheels.
SDK = ("boto3-1.44.5-py3-none-any.whl", "botocore-1.44.8-py3-none-any.whl", "s3transfer-0.19.3-py3-none-any.whl",
       "jmespath-1.1.0-py3-none-any.whl", "python_dateutil-2.9.0.post0-py2.py3-none-any.whl",
       "six-1.17.0-py2.py3-none-any.whl", "urllib3-2.8.0-py3-none-any.whl")
LAMBDA_WHEELS = [H2, HPACK, HYPERFRAME, PROTO, PYRAGE, ZSTD, *SDK]


def _fake_wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020 + random.randint(0, 5), 1, 1, 0, 0, 0))
            z.writestr(info, data)
    return path


@pytest.fixture
def wheel_dir(tmp_path):
    d = tmp_path / "wheels"
    d.mkdir()
    _fake_wheel(d / GRPC, {"grpc/__init__.py": b"# grpc", "grpc/_cython/cygrpc.cpython-313-x86_64-linux-gnu.so": b"\x7fELF",
                           "grpc/__pycache__/x.pyc": b"junk"})
    _fake_wheel(d / PROTO, {"google/protobuf/__init__.py": b"# pb"})
    for w, pkg in ((H2, "h2"), (HPACK, "hpack"), (HYPERFRAME, "hyperframe"), (PYRAGE, "pyrage"), (ZSTD, "backports/zstd")):
        _fake_wheel(d / w, {f"{pkg}/__init__.py": f"# {pkg}".encode()})
    for w in SDK:
        _fake_wheel(d / w, {f"{w.split('-')[0]}/__init__.py": b"# sdk"})
    _fake_wheel(d / MAC, {"grpc/__init__.py": b"# the wrong platform"})
    return d


def _hashes_of(wheel_dir: Path, requirements) -> dict[str, frozenset[str]]:
    """The table the lock would give for the fake wheels: their own SHA-256s."""
    out = {}
    for req in requirements:
        name, _, version = req.partition("==")
        out[req] = frozenset(hashlib.sha256(w.read_bytes()).hexdigest()
                             for w in wheel_dir.glob(f"{isch._dist_name(name)}-{version}-*.whl"))
    return out


ALL_REQS = ("grpcio==1.85.1", *isch.LAMBDA_REQUIREMENTS)


@pytest.fixture
def hashes(wheel_dir):
    return _hashes_of(wheel_dir, ALL_REQS)


@pytest.fixture
def source_root(tmp_path):
    root = tmp_path / "src"
    (root / "snapshot_lambda" / "__pycache__").mkdir(parents=True)
    (root / "snapshot_lambda" / "__init__.py").write_text("")
    (root / "snapshot_lambda" / "handler.py").write_text("def handler(e, c):\n    return {}\n")
    (root / "snapshot_lambda" / "__pycache__" / "handler.cpython-311.pyc").write_bytes(b"junk")
    return root


def test_find_wheels_picks_the_lambda_platform(wheel_dir, hashes):
    reqs = ("grpcio==1.85.1", "protobuf==6.33.6")
    assert [p.name for p in isch.find_wheels(wheel_dir, reqs, hashes)] == [GRPC, PROTO]
    assert [p.name for p in isch.find_wheels(wheel_dir, hashes=hashes)] == LAMBDA_WHEELS
    assert isch.lambda_compatible(GRPC) and isch.lambda_compatible(PROTO)
    assert not isch.lambda_compatible(MAC)
    assert not isch.lambda_compatible("grpcio-1.85.1-cp312-cp312-manylinux2014_x86_64.whl")
    assert not isch.lambda_compatible("grpcio-1.85.1-cp313-cp313-manylinux2014_aarch64.whl")


def test_package_is_deterministic(wheel_dir, hashes, source_root, tmp_path):
    wheels = isch.find_wheels(wheel_dir, ("grpcio==1.85.1", "protobuf==6.33.6", "h2==4.3.0"), hashes)
    a = isch.build_package(tmp_path / "a.zip", wheels, source_root=source_root)
    # new mtimes everywhere, and the wheel list in another order: same bytes
    for p in [*source_root.rglob("*"), *wheel_dir.iterdir()]:
        os.utime(p, (1_800_000_000, 1_800_000_000))
    b = isch.build_package(tmp_path / "b.zip", list(reversed(wheels)), source_root=source_root)
    assert a == b == hashlib.sha256((tmp_path / "a.zip").read_bytes()).hexdigest()
    with zipfile.ZipFile(tmp_path / "a.zip") as z:
        names = z.namelist()
        assert names == sorted(names)
        assert {"snapshot_lambda/handler.py", "grpc/__init__.py", "google/protobuf/__init__.py"} <= set(names)
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        so = z.getinfo("grpc/_cython/cygrpc.cpython-313-x86_64-linux-gnu.so")
        assert (so.external_attr >> 16) & 0o777 == 0o755
        assert z.read("grpc/__init__.py") == b"# grpc"  # not the macOS wheel's


def test_real_package_imports_the_handler_without_pulumi(tmp_path):
    """The real package: the handler imports from the zip alone, and its import graph stays Lambda-light."""
    out = tmp_path / "pkg.zip"
    isch.build_package(out, [])
    code = (f"import sys; sys.path.insert(0, {str(out)!r}); import snapshot_lambda.handler as h; "
            "assert h.__file__.startswith(sys.path[0]), h.__file__; "
            "bad = [m for m in ('pulumi', 'pulumi_aws', 'cryptography', 'infra', 'grpc') if m in sys.modules]; "
            "assert not bad, bad; print(h.handler.__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "handler", r.stderr


def test_wheel_dir_without_the_wheels_says_how_to_fill_it(tmp_path):
    with pytest.raises(isch.PackageError) as ei:
        isch.ensure_wheels(tmp_path)
    msg = str(ei.value)
    assert str(tmp_path) in msg and "pip download --no-deps --only-binary=:all: --platform manylinux2014_x86_64" in msg


def test_offline_cache_miss_is_a_clear_error(tmp_path):
    def offline(dest, reqs, hashes):
        raise subprocess.CalledProcessError(1, ["pip"], stderr="ERROR: Could not find a version (network is unreachable)")

    with pytest.raises(isch.PackageError) as ei:
        isch.ensure_wheels(cache_dir=tmp_path / "cache", download=offline)
    msg = str(ei.value)
    assert "network is unreachable" in msg and str(tmp_path / "cache") in msg
    assert isch.WHEEL_DIR_CONFIG_KEY in msg and isch.WHEEL_DIR_ENV in msg


def _copying_download(wheel_dir, calls):
    def fake_download(dest, reqs, hashes):
        calls.append((list(reqs), hashes))
        for w in LAMBDA_WHEELS:
            (dest / w).write_bytes((wheel_dir / w).read_bytes())

    return fake_download


def test_cache_is_filled_once(tmp_path, wheel_dir, hashes):
    calls = []
    fake_download = _copying_download(wheel_dir, calls)
    cache = tmp_path / "cache"
    first = isch.ensure_wheels(cache_dir=cache, download=fake_download, hashes=hashes)
    second = isch.ensure_wheels(cache_dir=cache, download=fake_download, hashes=hashes)
    assert first == second and [p.name for p in first] == LAMBDA_WHEELS
    assert calls == [(list(isch.LAMBDA_REQUIREMENTS), hashes)]


def _pins(path: Path) -> dict[str, str]:
    """name (canonical) -> version of each ``name==version`` line of a requirements or lock file."""
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", line)
        if m:
            pins[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return pins


def test_lambda_requirements_are_the_projects_pins_and_the_locks():
    """The Lambda ships the versions the project runs and tests with, and the lock has hashes for each."""
    requirements, lock = _pins(isch.ROOT / "requirements.txt"), _pins(isch.LOCK_FILE)
    for req in isch.LAMBDA_REQUIREMENTS:
        name, _, version = req.partition("==")
        name = re.sub(r"[-_.]+", "-", name).lower()
        if req in isch.LAMBDA_REQUIREMENTS_DIRECT or name == "boto3":  # the SDK's own dependencies: the lock's
            assert requirements.get(name) == version, f"{req}: requirements.txt pins {requirements.get(name)}"
        assert lock.get(name) == version, f"{req}: requirements.lock pins {lock.get(name)}"
    # boto3's own dependencies all ship: nothing the lock lists as "via boto3/botocore/s3transfer" is left out
    text = isch.LOCK_FILE.read_text()
    shipped = {re.sub(r"[-_.]+", "-", r.partition("==")[0]).lower() for r in isch.LAMBDA_REQUIREMENTS}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9._-]+)==", block)
        via = set(re.findall(r"#\s+(?:via\s+)?(boto3|botocore|s3transfer|python-dateutil)\s*$", block, re.M))
        if m and via:
            assert re.sub(r"[-_.]+", "-", m.group(1)).lower() in shipped, f"{m.group(1)} (needed by {via}) is not shipped"
    hashes = isch.locked_hashes()
    assert set(hashes) == set(isch.LAMBDA_REQUIREMENTS) and all(hashes.values())
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for hs in hashes.values() for h in hs)


def test_a_requirement_the_lock_pins_differently_is_refused(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("h2==4.2.0 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via -r requirements.txt\n")
    with pytest.raises(isch.PackageError, match=r"needs h2==4\.3\.0 but requirements\.lock has h2==4\.2\.0"):
        isch.locked_hashes(("h2==4.3.0",), lock)
    with pytest.raises(isch.PackageError, match="does not list protobuf"):
        isch.locked_hashes(("protobuf==6.33.6",), lock)


def test_a_tampered_wheel_in_the_cache_is_refused(tmp_path, wheel_dir, hashes):
    calls = []
    cache = tmp_path / "cache"
    isch.ensure_wheels(cache_dir=cache, download=_copying_download(wheel_dir, calls), hashes=hashes)
    with zipfile.ZipFile(cache / HPACK, "a") as z:  # still a valid wheel, one file more
        z.writestr("hpack/evil.py", b"import os  # runs with the backup certificate")
    with pytest.raises(isch.PackageError) as ei:
        isch.ensure_wheels(cache_dir=cache, download=_copying_download(wheel_dir, calls), hashes=hashes)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(f"refusing {cache / HPACK}: its SHA-256 ")
    assert "not one requirements.lock lists for hpack==4.1.0" in msg
    assert len(calls) == 1, "a refused wheel is not silently replaced"


def test_fake_wheels_are_refused_by_the_real_lock(wheel_dir):
    """Without a test table, the hashes are the lock's: a wheel PyPI never published is not taken."""
    with pytest.raises(isch.PackageError, match=r"^refusing .*h2-4\.3\.0-py3-none-any\.whl: its SHA-256"):
        isch.find_wheels(wheel_dir)


def test_pip_download_checks_hashes_and_takes_no_dependencies(tmp_path, monkeypatch):
    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"] = cmd
        seen["reqs"] = Path(cmd[cmd.index("-r") + 1]).read_text()
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(isch.subprocess, "run", fake_run)
    hashes = isch.locked_hashes()
    isch.pip_download(tmp_path, isch.LAMBDA_REQUIREMENTS, hashes)
    assert {"--no-deps", "--require-hashes", "--only-binary=:all:"} <= set(seen["cmd"])
    assert not any("index-url" in a or "://" in a for a in seen["cmd"]), "pip's configured index is used"
    lines = seen["reqs"].splitlines()
    assert [line.split()[0] for line in lines] == list(isch.LAMBDA_REQUIREMENTS)
    proto = next(line for line in lines if line.startswith("protobuf=="))
    assert all(f"--hash=sha256:{h}" in proto for h in hashes["protobuf==6.33.6"])


# --- the runtime: python3.13, its tags and nothing else ----------------------------------------------------------


@pytest.mark.parametrize("name, loads", [
    (PROTO, True),  # stable ABI of 3.9: loads on 3.13
    ("pyrage-1.4.0-cp310-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),
    (ZSTD, True),
    ("six-1.17.0-py2.py3-none-any.whl", True),  # compressed tag set (PEP 425)
    ("x-1-cp313-cp313-manylinux_2_34_x86_64.whl", True),  # Amazon Linux 2023's glibc exactly
    ("x-1-cp311-cp311-manylinux2014_x86_64.whl", False),  # the old runtime's ABI
    ("x-1-cp314-cp314-manylinux2014_x86_64.whl", False),
    ("x-1-cp314-abi3-manylinux2014_x86_64.whl", False),  # stable ABI of a newer CPython
    ("x-1-cp313-cp313t-manylinux2014_x86_64.whl", False),  # free-threaded build
    ("x-1-cp313-cp313-manylinux_2_39_x86_64.whl", False),  # needs a newer glibc than AL2023's 2.34
    ("x-1-cp313-cp313-musllinux_1_2_x86_64.whl", False),
    ("x-1-cp313-cp313-manylinux2014_aarch64.whl", False),
    ("x-1-cp313-cp313-win_amd64.whl", False),
    ("x-1-py2-none-any.whl", False),
])
def test_the_wheel_filter_takes_the_runtimes_tags_and_nothing_else(name, loads):
    assert isch.LAMBDA_RUNTIME == "python3.13" and isch.LAMBDA_PYTHON == "3.13"
    assert isch.lambda_compatible(name) is loads


def test_a_package_holding_a_wheel_the_runtime_cannot_load_is_refused(tmp_path, source_root):
    """Whatever picked the wheels, the package's own WHEEL tags and extension names are checked again."""
    old = _fake_wheel(tmp_path / "pyrage-1.4.0-cp313-abi3-manylinux2014_x86_64.whl",  # a renamed 3.11 wheel
                      {"pyrage/__init__.py": b"", "pyrage-1.4.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nTag: cp311-cp311-manylinux2014_x86_64\n"})
    with pytest.raises(isch.PackageError, match=r"python3\.13 cannot load: pyrage-1\.4\.0\.dist-info is built for cp311"):
        isch.build_package(tmp_path / "p.zip", [old], source_root=source_root)
    so = _fake_wheel(tmp_path / "z-1-cp313-cp313-manylinux2014_x86_64.whl",
                     {"z/_z.cpython-311-x86_64-linux-gnu.so": b"\x7fELF"})
    with pytest.raises(isch.PackageError, match=r"extension module for another CPython \(cpython-311"):
        isch.build_package(tmp_path / "p.zip", [so], source_root=source_root)
    assert not (tmp_path / "p.zip").exists()
    good = _fake_wheel(tmp_path / "y-1-cp313-cp313-manylinux2014_x86_64.whl",
                       {"y/_y.cpython-313-x86_64-linux-gnu.so": b"\x7fELF", "y/_z.abi3.so": b"\x7fELF",
                        "y-1.dist-info/WHEEL": b"Tag: cp313-cp313-manylinux_2_17_x86_64\nTag: cp313-cp313-manylinux2014_x86_64\n"})
    isch.build_package(tmp_path / "p.zip", [good], source_root=source_root)


def test_the_sdk_ships_in_the_package():
    """boto3/botocore come from the lock, not from the runtime (IfNoneMatch needs botocore >= 1.35)."""
    names = {r.partition("==")[0] for r in isch.LAMBDA_REQUIREMENTS}
    assert {"boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3"} <= names
    botocore = next(r for r in isch.LAMBDA_REQUIREMENTS if r.startswith("botocore=="))
    assert tuple(int(x) for x in botocore.partition("==")[2].split(".")[:2]) >= (1, 35)


def test_preview_warns_before_the_runtime_ends():
    from datetime import UTC, datetime

    assert isch.runtime_end_warning(datetime(2026, 12, 6, tzinfo=UTC)) is None
    soon = isch.runtime_end_warning(datetime(2029, 3, 1, tzinfo=UTC))
    assert soon and "python3.13 is deprecated by AWS on 2029-06-30" in soon and "2029-07-31" in soon
    assert "`pulumi up`" in soon and "infra/lambda_package.py" in soon
    late = isch.runtime_end_warning(datetime(2029, 9, 1, tzinfo=UTC))
    assert late and "blocked for updates since 2029-08-31" in late
