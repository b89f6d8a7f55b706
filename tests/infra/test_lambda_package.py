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

from infra import schedule as isch

H2 = "h2-4.3.0-py3-none-any.whl"
HPACK = "hpack-4.1.0-py3-none-any.whl"
HYPERFRAME = "hyperframe-6.1.0-py3-none-any.whl"
GRPC = "grpcio-1.85.1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
PROTO = "protobuf-6.33.6-cp39-abi3-manylinux2014_x86_64.whl"
PYRAGE = "pyrage-1.4.0-cp39-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
ZSTD = "backports_zstd-1.8.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
MAC = "grpcio-1.85.1-cp311-cp311-macosx_11_0_universal2.whl"


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
    _fake_wheel(d / GRPC, {"grpc/__init__.py": b"# grpc", "grpc/_cython/cygrpc.cpython-311-x86_64-linux-gnu.so": b"\x7fELF",
                           "grpc/__pycache__/x.pyc": b"junk"})
    _fake_wheel(d / PROTO, {"google/protobuf/__init__.py": b"# pb"})
    for w, pkg in ((H2, "h2"), (HPACK, "hpack"), (HYPERFRAME, "hyperframe"), (PYRAGE, "pyrage"), (ZSTD, "backports/zstd")):
        _fake_wheel(d / w, {f"{pkg}/__init__.py": f"# {pkg}".encode()})
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
    assert [p.name for p in isch.find_wheels(wheel_dir, hashes=hashes)] == [H2, HPACK, HYPERFRAME, PROTO, PYRAGE, ZSTD]
    assert isch.lambda_compatible(GRPC) and isch.lambda_compatible(PROTO)
    assert not isch.lambda_compatible(MAC)
    assert not isch.lambda_compatible("grpcio-1.85.1-cp312-cp312-manylinux2014_x86_64.whl")
    assert not isch.lambda_compatible("grpcio-1.85.1-cp311-cp311-manylinux2014_aarch64.whl")


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
        so = z.getinfo("grpc/_cython/cygrpc.cpython-311-x86_64-linux-gnu.so")
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
        for w in (H2, HPACK, HYPERFRAME, PROTO, PYRAGE, ZSTD):
            (dest / w).write_bytes((wheel_dir / w).read_bytes())

    return fake_download


def test_cache_is_filled_once(tmp_path, wheel_dir, hashes):
    calls = []
    fake_download = _copying_download(wheel_dir, calls)
    cache = tmp_path / "cache"
    first = isch.ensure_wheels(cache_dir=cache, download=fake_download, hashes=hashes)
    second = isch.ensure_wheels(cache_dir=cache, download=fake_download, hashes=hashes)
    assert first == second and [p.name for p in first] == [H2, HPACK, HYPERFRAME, PROTO, PYRAGE, ZSTD]
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
        assert requirements.get(name) == version, f"{req}: requirements.txt pins {requirements.get(name)}"
        assert lock.get(name) == version, f"{req}: requirements.lock pins {lock.get(name)}"
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
