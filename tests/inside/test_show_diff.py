"""show and diff on real snapshots of the sandbox (a real etcd behind a simulated Talos node): the objects created,
deleted and changed between two snapshots, or since a snapshot (live), are found exactly; the restore prompt says
what the restore would undo."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from dr.commands import backup, diff, restore, show
from tests.support.tools import run_cli

NEW_CM = "/registry/configmaps/demo/created-later"
GONE_SECRET = "/registry/secrets/demo/api-token"
CHANGED_CM = "/registry/configmaps/demo/web-config"
NEW_NS_CM = "/registry/configmaps/team-b/settings"


def _snapshot() -> Path:
    res = run_cli(backup.main)
    assert res.code == 0, res
    return max(Path(".talos/snapshots").glob("etcd-snapshot-*.db"), key=lambda p: p.stat().st_mtime_ns)


def _change(sb) -> None:
    sb.put(NEW_CM, b"k8s\x00new")
    sb.put(NEW_NS_CM, b"k8s\x00other")
    assert sb.delete_prefix(GONE_SECRET) == 1
    old = sb.get_prefix(CHANGED_CM)[CHANGED_CM]
    sb.put(CHANGED_CM, old + (b"x" if isinstance(old, bytes) else "x"))


def test_show_counts_what_etcd_holds(sandbox_env):
    sb = sandbox_env
    # A JSON-encoded object next to the protobuf ones (a hand-made cluster, or a Node another tool wrote): counted.
    sb.put("/registry/minions/worker-json", '{"kind":"Node","apiVersion":"v1","metadata":{"name":"worker-json"}}')
    snap = _snapshot()
    res = run_cli(show.main, str(snap), "--json")
    assert res.code == 0, res
    doc = json.loads(res.out)
    registry = sb.get_prefix("/registry/")
    assert doc["objects"] == len(registry)
    assert doc["by_type"]["secrets"]["count"] == sum(1 for k in registry if k.startswith("/registry/secrets/"))
    assert doc["by_type"]["nodes"]["count"] == sum(1 for k in registry if k.startswith("/registry/minions/"))
    assert doc["by_namespace"]["demo"]["count"] == sum(1 for k in registry if k.split("/")[-2] == "demo")
    assert doc["revision"] == int(json.loads(sb.etcdctl("snapshot", "status", str(snap), "-w", "json").stdout)
                                  ["revision"])
    assert doc["size"] == snap.stat().st_size and doc["quota_bytes"] == 2 * 1024**3
    # JSON: the one above, and the sandbox kubelet's own Node (stored as JSON, sandbox/kube.py)
    json_values = sum(1 for v in registry.values() if isinstance(v, str) and v.startswith("{"))
    assert json_values >= 1 and doc["encodings"]["json"] == json_values
    assert doc["encodings"]["encrypted:secretbox"] == \
        doc["by_type"]["secrets"]["count"]
    assert doc["encodings"]["protobuf"] == doc["objects"] - json_values - doc["by_type"]["secrets"]["count"]
    biggest = doc["biggest"]
    assert biggest == sorted(biggest, key=lambda b: -b["bytes"]) and len(biggest) == 10
    # Filters.
    res = run_cli(show.main, str(snap), "--namespace", "demo", "--type", "secrets,configmaps", "--json")
    doc = json.loads(res.out)
    expected = [k for k in registry if k.startswith(("/registry/secrets/demo/", "/registry/configmaps/demo/"))]
    assert doc["objects"] == len(expected) and set(doc["by_type"]) == {"secrets", "configmaps"}
    text = run_cli(show.main, str(snap))
    assert text.code == 0 and "secrets" in text.out and "of etcd's default 2 GiB quota" in text.out


def test_diff_between_two_snapshots_and_live_is_exact(sandbox_env):
    sb = sandbox_env
    a = _snapshot()
    _change(sb)
    b = _snapshot()
    expected = {("created", "configmaps", "demo", "created-later"), ("created", "configmaps", "team-b", "settings"),
                ("deleted", "secrets", "demo", "api-token"), ("changed", "configmaps", "demo", "web-config")}
    for other in (str(b), "live"):
        res = run_cli(diff.main, str(a), other, "--details", "--json")
        assert res.code == 0, res
        doc = json.loads(res.out)
        got = {(o["change"], o["type"], o["namespace"], o["name"]) for o in doc["objects"]}
        # A snapshot moves etcd's own revision only, never an object: nothing else differs.
        assert got == expected, (other, got)
        assert (doc["created"], doc["deleted"], doc["changed"]) == (2, 1, 1)
        assert doc["by_namespace"]["demo"] == {"created": 1, "deleted": 1, "changed": 1}
    # Reversed, created and deleted swap.
    doc = json.loads(run_cli(diff.main, str(b), str(a), "--json").out)
    assert (doc["created"], doc["deleted"], doc["changed"]) == (1, 2, 1) and "objects" not in doc
    # Filtered, and the text summary.
    doc = json.loads(run_cli(diff.main, str(a), str(b), "--namespace", "team-b", "--json").out)
    assert (doc["created"], doc["deleted"], doc["changed"]) == (1, 0, 0)
    res = run_cli(diff.main, str(a), str(b))
    assert "2 created, 1 deleted, 1 changed" in res.out and "--details" in res.out
    res = run_cli(diff.main, str(a), str(a))
    assert res.code == 2 or res.code == 3


def test_live_snapshot_is_removed_and_private(sandbox_env, tmp_path, monkeypatch):
    from dr.commands import show as show_mod

    seen: list[int] = []
    real = show_mod.SnapshotReader

    def spy(path, label=None):
        seen.append(Path(path).stat().st_mode & 0o777)
        return real(path, label)

    monkeypatch.setattr(show_mod, "SnapshotReader", spy)
    tmp = tmp_path / "t"
    res = run_cli(show.main, "live", "--tmp-dir", str(tmp))
    assert res.code == 0, res
    assert seen == [0o600]
    assert list(tmp.iterdir()) == []


@pytest.mark.slow
def test_restore_prompt_says_what_it_undoes(sandbox_env):
    sb = sandbox_env
    a = _snapshot()
    _change(sb)
    res = run_cli(restore.main, str(a), "--poll-interval", "0.1", "--reboot-timeout", "30s", "--bootstrap-timeout",
                  "30s", "--health-timeout", "20s", "--yes", stdin=io.StringIO(""))
    assert res.code == 0, res
    prompt = res.out.split("confirmed by --yes")[0]
    assert "2 objects created since the snapshot are LOST, 1 deleted since come BACK, 1 changed since" in prompt
    lines = {ln.split()[0]: ln.split()[1:] for ln in prompt.splitlines() if ln.startswith("            ")
             and ln.split()[0] in ("demo", "team-b")}
    assert lines == {"demo": ["1", "1", "1"], "team-b": ["1", "0", "0"]}
    assert GONE_SECRET in sb.get_prefix("/registry/secrets/demo/") and NEW_CM not in sb.get_prefix(NEW_CM)


def test_prompt_says_so_when_the_node_cannot_give_a_snapshot(monkeypatch, tmp_path):
    from dr.commands import show as show_mod
    from dr.commands.restore import undo
    from dr.core.errors import NodeUnreachable
    from dr.core.node_state import ETCD_RUNNING, ETCD_STOPPED

    [line] = undo.what_it_undoes(None, None, io.StringIO(), ETCD_STOPPED)  # type: ignore[arg-type]
    assert "unknown" in line and "not running" in line

    def refuse(*a, **kw):
        raise NodeUnreachable("node 10.0.0.1 does not answer")

    monkeypatch.setattr(show_mod, "take_live", refuse)
    [line] = undo.what_it_undoes(None, None, io.StringIO(), ETCD_RUNNING, base=tmp_path)  # type: ignore[arg-type]
    assert "unknown" in line and "does not answer" in line
    assert list(tmp_path.iterdir()) == []  # its temporary folder is gone


def test_summary_lines_by_namespace():
    from dr.commands.restore import undo
    from dr.core import inventory

    d = inventory.diff([(b"/registry/secrets/a/x", b"1")], [(b"/registry/configmaps/b/y", b"1")])
    lines = undo.summary_lines(d)
    assert "1 objects created since the snapshot are LOST, 1 deleted since come BACK, 0 changed" in lines[0]
    assert [ln.split() for ln in lines[2:]] == [["a", "0", "1", "0"], ["b", "1", "0", "0"]]
    assert "nothing" in undo.summary_lines(inventory.Diff())[0]


def test_show_and_diff_resolve_latest_from_the_bucket(sandbox_env, tmp_path):
    sb = sandbox_env
    assert run_cli(backup.main, "--save-to-s3").code == 0
    sb.put(NEW_CM, b"k8s\x00new")
    assert run_cli(backup.main, "--save-to-s3").code == 0
    res = run_cli(show.main, "latest", "--json", "--tmp-dir", str(tmp_path / "t"))
    assert res.code == 0, res
    doc = json.loads(res.out)
    assert doc["snapshot"].startswith(f"s3://{sb.bucket}/") and doc["objects"] == len(sb.get_prefix("/registry/"))
    res = run_cli(diff.main, "latest~1", "latest", "--json", "--details", "--tmp-dir", str(tmp_path / "t"))
    assert res.code == 0, res
    assert [(o["change"], o["key"]) for o in json.loads(res.out)["objects"]] == [("created", NEW_CM)]
    assert list((tmp_path / "t").iterdir()) == []  # downloads removed
