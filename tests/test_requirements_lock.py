"""The hash-pinned locks (``make lock``) agree with requirements*.txt, and name no index."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", line)
        if m:
            pins[_canonical(m.group(1))] = m.group(2)
    return pins


def _entries(lock: Path) -> dict[str, list[str]]:
    """name -> the hashes of its entry, for each pinned entry of a pip-compile --generate-hashes file."""
    out: dict[str, list[str]] = {}
    for entry in re.split(r"\n(?=\S)", lock.read_text()):
        m = re.match(r"([A-Za-z0-9._-]+)==\S+", entry)
        if m:
            out[_canonical(m.group(1))] = re.findall(r"--hash=sha256:([0-9a-f]{64})", entry)
    return out


@pytest.mark.parametrize(
    ("requirements", "lock"),
    [("requirements.txt", "requirements.lock"), ("requirements-dev.txt", "requirements-dev.lock")],
)
def test_lock_pins_what_the_requirements_pin(requirements, lock):
    wanted, locked = _pins(ROOT / requirements), _pins(ROOT / lock)
    if requirements == "requirements-dev.txt":
        wanted |= _pins(ROOT / "requirements.txt")
    differ = {name: (version, locked.get(name)) for name, version in wanted.items() if locked.get(name) != version}
    assert not differ, f"{lock} is stale (wanted, locked): {differ}; run `make lock`"


def test_every_locked_package_has_hashes_and_the_locks_agree():
    runtime, dev = _entries(ROOT / "requirements.lock"), _entries(ROOT / "requirements-dev.lock")
    assert runtime and set(runtime) <= set(dev)
    for name, hashes in {**runtime, **dev}.items():
        assert hashes, f"{name} has no --hash in the lock"
    runtime_pins, dev_pins = _pins(ROOT / "requirements.lock"), _pins(ROOT / "requirements-dev.lock")
    assert {n: v for n, v in dev_pins.items() if n in runtime_pins} == runtime_pins, (
        "the two locks pin different versions"
    )


def test_grpcio_is_a_dev_requirement_only():
    """Nothing of ours imports grpc at run time (pulumi's SDK pulls it into the runtime lock by itself)."""
    assert "grpcio" not in _pins(ROOT / "requirements.txt")
    assert "grpcio" in _pins(ROOT / "requirements-dev.txt")
    for top in ("dr", "infra", "snapshot_lambda"):
        for path in (ROOT / top).rglob("*.py"):
            assert not re.search(r"^\s*(import grpc\b|from grpc\b)", path.read_text(), re.M), f"{path} imports grpc"


def test_no_index_is_named():
    """pip's configured index is used; the hashes make the source irrelevant."""
    for name in ("requirements.lock", "requirements-dev.lock", "requirements.txt", "requirements-dev.txt", "Makefile"):
        text = (ROOT / name).read_text()
        assert not re.search(r"--(extra-)?index-url|--find-links|--trusted-host|://", text), name


def test_the_venv_installs_the_dev_lock_with_hashes_required():
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install -q --require-hashes -r requirements-dev.lock" in makefile
    assert (
        re.search(r"^STAMP := .*\$\(LOCKS\)", makefile, re.M)
        and "LOCKS := requirements.lock requirements-dev.lock" in makefile
    )
