"""The revision moves forward (issue 21): the restore's throwaway etcd restores the snapshot with `etcdutl snapshot
restore --bump-revision 1000000000 --mark-compacted` (etcd's disaster-recovery guide, v3.6 op-guide/recovery.md
"Restoring with revision bump"; etcd-io/etcd#16028, #16029), and the fresh snapshot it saves is what the node gets.
Talos's own recovery (services/etcd.go recoverFromSnapshot) restores without a bump, so the bump has to be in the file.
"""

from __future__ import annotations

import io
import json
import os

import pytest

from dr.commands import restore, verify
from dr.core.errors import ExitCode
from tests.support.tools import require_etcd35, run_cli

pytestmark = pytest.mark.slow

A = "/registry/configmaps/default/before"
B = "/registry/configmaps/default/after"
FAST = ("--poll-interval", "0.1", "--reboot-timeout", "30s", "--bootstrap-timeout", "30s", "--health-timeout", "20s")


@pytest.fixture
def node_env(sandbox_workdir):
    return sandbox_workdir


def _revision(sb) -> int:
    out = sb.etcdctl("get", A, "-w", "json").stdout
    return int(json.loads(out)["header"]["revision"])


def test_restore_moves_the_revision_forward_and_compacts_the_past(node_env, tmp_path, monkeypatch):
    sb = node_env
    monkeypatch.setenv("PATH", f"{require_etcd35()}{os.pathsep}{os.environ['PATH']}")  # etcdutl 3.5.16: has the flags
    sb.put(A, "a")
    snap = tmp_path / "etcd-snapshot-20261206T000000Z.db"
    sb.etcdctl("snapshot", "save", str(snap))
    for i in range(20):
        sb.put(B, str(i))
    before = _revision(sb)
    res = run_cli(restore.main, str(snap), "--yes", *FAST, stdin=io.StringIO(""))
    assert res.code == 0, res
    assert f"moved forward by {verify.BUMP_REVISION}" in res.out
    keys = sb.keys()
    assert A in keys and B not in keys
    after = _revision(sb)
    assert after >= verify.BUMP_REVISION > before  # never backwards for a client that saw `before`
    # The past is compacted: a read at a revision of the lost cluster is refused, so a watcher must start over.
    old = sb.etcdctl("get", A, f"--rev={before}")
    assert old.returncode != 0 and "compacted" in (old.stderr + old.stdout), old
    assert not list((tmp_path / "work" / ".talos").glob(".restore-bump-*"))  # the bumped copy is not left behind


def test_no_revision_bump_gives_the_node_the_snapshot_as_it_is(node_env, tmp_path, monkeypatch):
    sb = node_env
    monkeypatch.setenv("PATH", f"{require_etcd35()}{os.pathsep}{os.environ['PATH']}")
    sb.put(A, "a")
    snap = tmp_path / "etcd-snapshot-20261206T000000Z.db"
    sb.etcdctl("snapshot", "save", str(snap))
    rev = _revision(sb)
    res = run_cli(restore.main, str(snap), "--yes", "--no-revision-bump", *FAST, stdin=io.StringIO(""))
    assert res.code == 0, res
    assert _revision(sb) < verify.BUMP_REVISION and _revision(sb) >= rev


def test_without_a_bumping_etcdutl_the_prompt_says_so(node_env, tmp_path):
    """Debian's etcdctl 3.4 (the base PATH here) restores but cannot bump: said before the question, not hidden."""
    sb = node_env
    sb.put(A, "a")
    snap = tmp_path / "etcd-snapshot-20261206T000000Z.db"
    sb.etcdctl("snapshot", "save", str(snap))
    res = run_cli(restore.main, str(snap), *FAST, stdin=io.StringIO(""))
    assert res.code == ExitCode.NOT_CONFIRMED, res
    assert "NOT moved forward" in res.out
