"""`python -m demo` (what `make demo` runs) end to end, from a fresh clone; its report's figures are checked against
the snapshots the run left behind, read back with dr.verify (a real etcd), not against the demo's own bookkeeping."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from demo.run import (
    APP_NAMESPACE,
    EXTRACTED_SECRET,
    INTRUDER_KEYS,
    app_manifests,
    app_objects,
    compare,
    counts_by_type,
    in_namespace,
    plan_disaster,
)
from dr.commands import verify
from dr.core import kubeproto, secretbox
from dr.core.errors import ExitCode
from sandbox.api import Sandbox
from sandbox.testing import require_etcd
from tests.support.tools import ROOT, run_cli

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DR_", "AWS_", "DEMO_"))}
    env.pop("PYTHONPATH", None)
    return env


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if text.encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def _processes_running_in(folder: Path) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.readlink(d / "cwd") == str(folder):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def _assert_sandbox_down(folder: Path) -> None:
    assert not Sandbox.load(folder / "sandbox").running()
    assert _processes_mentioning(str(folder / "sandbox")) == []


def test_demo_from_a_fresh_clone(tmp_path):
    require_etcd()
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    work, report = tmp_path / "demo", tmp_path / "report.json"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "demo", "--dir", str(work), "--keep", "--report", str(report)],
                          cwd=clone, env=_env(), capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    out = proc.stdout
    for cmd in ("$ python -m sandbox up", "$ talos-dr backup --save-to-s3", "$ talos-dr verify latest",
                "$ talos-dr list", "$ talos-dr restore latest --yes", "$ python -m sandbox down"):
        assert cmd in out
    assert "result: PASS" in out
    assert not (clone / ".talos").exists()  # the demo never writes the user's own .talos/
    _assert_sandbox_down(work)

    r = json.loads(report.read_text())
    assert r["ok"] is True and r["exit_code"] == 0 and r["sandbox_down"] is True and r["failed_step"] is None
    assert list(r["phases"]) == ["setup", "cluster", "backup", "disaster", "restore", "check", "teardown"]
    # Each figure is rounded to the millisecond on its own, so their sum may pass the total by a few rounding steps.
    assert sum(r["phases"].values()) <= r["total_seconds"] + 0.001 * len(r["phases"])
    assert r["total_seconds"] <= wall
    assert r["phases"]["restore"] > 0.5  # a real reset, reboot and bootstrap happened

    # The backup, as the restore downloaded it again from S3, read back by a throwaway etcd.
    snapdir = work / ".talos" / "snapshots"
    # (restores download into snapshots/downloads, and the S3 copy is zstd-compressed)
    [backup] = [p for p in (snapdir / "downloads").glob("etcd-snapshot-*.db")]
    [before_restore] = list(snapdir.glob("pre-restore-etcd-snapshot-*.db"))
    assert r["backup"]["object"].endswith("/" + backup.name + ".zst")
    tmp = tmp_path / "t"
    tmp.mkdir()
    b = run_cli(verify.main, str(backup), "--json", "--tmp-dir", str(tmp))
    assert b.code == 0, b
    b = json.loads(b.out)
    assert b["total_keys"] == r["cluster"]["keys"] == r["backup"]["keys"] == r["check"]["compared"]
    assert b["resources"] == r["cluster"]["resources"]
    assert r["backup"]["verified_keys"] == b["total_keys"] and r["backup"]["verified_revision"] == b["revision"]

    # What the disaster did, per type: the pre-restore safety snapshot against the backup.
    d = run_cli(verify.main, str(before_restore), "--against", str(backup), "--json", "--tmp-dir", str(tmp))
    assert d.code == 0, d
    diff = json.loads(d.out)["against"]["resources"]
    dis = r["disaster"]
    assert {t: v["removed"] for t, v in diff.items() if v["removed"]} == counts_by_type(dis["deleted"])
    assert {t: v["changed"] for t, v in diff.items() if v["changed"]} == counts_by_type(dis["corrupted"])
    assert {t: v["added"] for t, v in diff.items() if v["added"]} == counts_by_type(dis["added"])
    assert dis["deleted_count"] == len(dis["deleted"]) > 0 and dis["corrupted_count"] == len(dis["corrupted"]) > 0
    assert dis["added_count"] == len(INTRUDER_KEYS)
    c = r["check"]
    assert c["ok"] and c["identical"] == c["compared"] and not (c["missing"] or c["wrong"] or c["extra"])
    assert (c["deleted_back"], c["corrupted_back"], c["added_gone"]) == (
        dis["deleted_count"], dis["corrupted_count"], dis["added_count"])
    assert (f"restored:  {c['deleted_back']}/{dis['deleted_count']} deleted keys back, "
            f"{c['corrupted_back']}/{dis['corrupted_count']} overwritten keys repaired") in out
    assert list(tmp.iterdir()) == []

    # The small disaster after the check: one Secret deleted, got back with `talos-dr extract` from the S3 backup.
    assert f"$ talos-dr extract latest -n {APP_NAMESPACE} --type secrets --name {EXTRACTED_SECRET}" in out
    secret_file = work / "restored" / APP_NAMESPACE / f"secret-{EXTRACTED_SECRET}.yaml"
    assert r["extract"] == {"secret": f"{APP_NAMESPACE}/{EXTRACTED_SECRET}", "file": str(secret_file),
                            "identical": True}
    assert secret_file.stat().st_mode & 0o777 == 0o600
    got = yaml.safe_load(secret_file.read_text())
    want = app_manifests()[f"/registry/secrets/{APP_NAMESPACE}/{EXTRACTED_SECRET}"]
    assert (got["kind"], got["type"], got["data"]) == ("Secret", "Opaque", want["data"])
    assert got["metadata"]["name"] == EXTRACTED_SECRET and got["metadata"]["namespace"] == APP_NAMESPACE
    assert f"extract:   Secret {APP_NAMESPACE}/{EXTRACTED_SECRET} deleted after the restore" in out


@pytest.mark.parametrize("fault, code, words", [
    ("corrupt-backup", ExitCode.CORRUPT_SNAPSHOT, "is corrupt"),
    ("bootstrap-fails", ExitCode.NODE_ERROR, "fault injected by the demo"),
])
def test_a_failed_restore_fails_the_demo_and_still_takes_the_sandbox_down(tmp_path, fault, code, words):
    require_etcd()
    work, report = tmp_path / "demo", tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "demo", "--dir", str(work), "--report", str(report)],
                          cwd=tmp_path, env={**_env(), "PYTHONPATH": str(ROOT), "DEMO_FAULT": fault},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == code, proc.stdout[-4000:]
    r = json.loads(report.read_text())
    assert r["ok"] is False and r["exit_code"] == code and r["failed_step"] == "restore" and r["fault"] == fault
    assert words in r["error"]
    assert r["sandbox_down"] is True and "check" not in r["phases"] and "teardown" in r["phases"]
    assert "result: FAIL at step 'restore'" in proc.stdout and f"work folder kept: {work}" in proc.stdout
    _assert_sandbox_down(work)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_stopping_the_demo_during_the_restore_still_takes_the_sandbox_down(tmp_path, how):
    require_etcd()
    work, report = tmp_path / "demo", tmp_path / "report.json"
    proc = subprocess.Popen([sys.executable, "-m", "demo", "--dir", str(work), "--report", str(report)],
                            cwd=tmp_path, env={**_env(), "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "waiting for node" in line:  # the restore has reset the node: the worst moment to stop
                if how == "ctrl-c":
                    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
                else:
                    proc.terminate()  # `timeout`, a cancelled CI job: the demo alone
                break
        rest = proc.stdout.read()
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == ExitCode.INTERRUPTED, "".join(seen) + rest
    r = json.loads(report.read_text())
    assert r["failed_step"] == "restore" and r["sandbox_down"] is True
    assert "interrupted" in r["error"]
    _assert_sandbox_down(work)
    assert _processes_running_in(work) == []  # the dr.restore it ran (cwd: the work folder) was stopped too


def test_a_reader_that_goes_away_does_not_leave_the_sandbox_running(tmp_path):
    """`python -m demo | head`: printing fails with a broken pipe; the demo must still take the sandbox down."""
    require_etcd()
    work, report = tmp_path / "demo", tmp_path / "report.json"
    proc = subprocess.Popen([sys.executable, "-m", "demo", "--dir", str(work), "--report", str(report)],
                            cwd=tmp_path, env={**_env(), "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    for _ in range(12):  # into the first phase: the sandbox is starting
        proc.stdout.readline()
    proc.stdout.close()
    code = proc.wait(300)
    r = json.loads(report.read_text())
    assert r["sandbox_down"] is True and code == r["exit_code"] == 0, r
    _assert_sandbox_down(work)


# --- the demo's pure parts ------------------------------------------------------------------------------------


def test_namespace_membership():
    assert in_namespace("/registry/namespaces/shop", "shop")
    assert in_namespace("/registry/deployments/shop/cart", "shop")
    assert in_namespace("/registry/services/specs/shop/cart", "shop")
    assert not in_namespace("/registry/namespaces/shopping", "shop")
    assert not in_namespace("/registry/deployments/shopping/cart", "shop")
    assert not in_namespace("/registry/minions/shop", "shop")
    assert not in_namespace("/registry/services/specs/default/shop", "shop")


def test_disaster_plan():
    keys = sorted(app_objects()) + ["/registry/namespaces/demo", "/registry/pods/demo/p", "/registry/minions/n"]
    d = plan_disaster(keys)
    assert d.deleted == sorted(app_objects())
    assert d.corrupted == ["/registry/namespaces/demo", "/registry/pods/demo/p"]
    assert d.added == sorted(INTRUDER_KEYS)


def test_compare():
    exp = {"a": b"1", "b": b"2", "c": b"3"}
    assert compare(exp, dict(exp)).ok
    c = compare(exp, {"a": b"1", "b": b"x", "d": b"4"})
    assert (c.missing, c.wrong, c.extra, c.identical, c.ok) == (["c"], ["b"], ["d"], 1, False)
    assert not compare(exp, {**exp, "z": b""}).ok


def test_the_app_is_stored_as_kube_apiserver_stores_it():
    """Protobuf in the k8s\\0 envelope; Secrets sealed with secretbox under key2 with the cluster's key (what
    `talos-dr extract` reads), not JSON."""
    box = "q2Xo9mY4H0s0Yc2o0xkz1m5vH8qQp3c9Jk3vV8w6b0E="  # a secretboxencryptionsecret: base64 of 32 bytes
    objs = app_objects(box)
    assert set(objs) == set(app_manifests())
    for k, v in objs.items():
        if k.startswith("/registry/secrets/"):
            assert v.startswith(b"k8s:enc:secretbox:v1:key2:")
            obj = kubeproto.decode(secretbox.open_value(v, secretbox.key_from_secret(box)))
            assert obj["data"] == app_manifests()[k]["data"] and obj["type"] == "Opaque"
        else:
            assert v.startswith(b"k8s\x00"), k
    cm = kubeproto.decode(objs[f"/registry/configmaps/{APP_NAMESPACE}/cart-config"])
    assert cm["data"] == {"LOG_LEVEL": "info", "SERVICE": "cart"}
    with pytest.raises(secretbox.WrongKey):
        secretbox.open_value(objs[f"/registry/secrets/{APP_NAMESPACE}/{EXTRACTED_SECRET}"],
                             secretbox.key_from_secret(base64.b64encode(bytes(32)).decode()))
