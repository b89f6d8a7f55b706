"""`talos-dr replace-member` against the three-node sandbox (three real etcd members, Talos's join loop modelled from
v1.13.9): one member lost and replaced without a restore, the others' data untouched; the refusals (quorum lost,
a healthy member, one node); a run stopped while waiting for the rebuild continues from its journal."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from demo.run import read_all
from dr.commands import replace_member
from dr.core import member_repair as mr
from dr.core.errors import ExitCode
from tests.support.tools import run_cli

pytestmark = pytest.mark.slow


def _in(sb, monkeypatch, tmp_path: Path) -> Path:
    """Run the commands with the sandbox's environment from an empty project folder; returns its .talos/."""
    for k, v in sb.env.items():
        monkeypatch.setenv(k, v)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / "Pulumi.yaml").write_text("name: talos-dr\n")
    monkeypatch.chdir(work)
    monkeypatch.setenv("DR_TALOS_DIR", str(work / ".talos"))
    return work / ".talos"


def _kvs(sb) -> dict[str, dict]:
    """Every key and value, from each member's own etcd, by member name."""
    return {m["name"]: read_all(m["client_urls"][0]) for m in sb.etcd_members() if m["client_urls"]}


def _ids(sb) -> dict[str, tuple[str, bool]]:
    return {m["name"]: (m["id"], m["is_learner"]) for m in sb.etcd_members()}


FAST = ("--poll-interval", "200ms")


def test_one_member_lost_is_replaced_without_a_restore_and_the_others_are_untouched(sandbox_factory, monkeypatch,
                                                                                       tmp_path):
    sb = sandbox_factory(nodes=3)
    talos = _in(sb, monkeypatch, tmp_path)
    sb.wait_voters(3)
    for i in range(20):
        sb.put(f"/registry/configmaps/default/before-{i}", f"value-{i}")
    lost = sb.members[2]
    before_ids, before_kv = _ids(sb), _kvs(sb)
    kept = [m.hostname for m in sb.members[:2]]
    sb.lose(3, disk=True)

    # First run: it removes the lost member, says what `pulumi up` to run, and gives up waiting (a short timeout):
    # the journal keeps what it did.
    res = run_cli(replace_member.main, lost.private_ip, "--yes", "--rebuild-timeout", "2s", *FAST)
    assert res.code == ExitCode.TIMEOUT, res
    assert "pulumi up --refresh --stack" in res.out and "Run this now, in another terminal" in res.out
    assert f"run `talos-dr replace-member {lost.hostname}` again" in res.err
    j = mr.parse((talos / mr.JOURNAL_NAME).read_text(), "j")
    old_id = before_ids[lost.hostname][0]
    assert j.removed_id == old_id and j.done(mr.REMOVE) and j.mode == mr.BY_PULUMI
    assert (talos / mr.JOURNAL_NAME).stat().st_mode & 0o777 == 0o600
    [safety] = list((talos / "snapshots").glob("pre-restore-etcd-snapshot-*.db"))
    assert j.safety_snapshot == str(safety)
    members = _ids(sb)
    assert set(members) == set(kept) and all(not learner for _id, learner in members.values())  # two voters left

    # `pulumi up --refresh`: a new instance, the same private IP, an empty etcd. The second run continues.
    sb.replace_instance(3)
    res = run_cli(replace_member.main, lost.hostname, "--yes", *FAST)
    assert res.code == 0, res
    assert "continuing the replacement" in res.out and "member replacement complete" in res.out
    assert "removing etcd member" not in res.out and "confirmed by --yes" not in res.out  # nothing destructive left
    assert not (talos / mr.JOURNAL_NAME).exists()

    after_ids, after_kv = _ids(sb), _kvs(sb)
    assert set(after_ids) == {*kept, lost.hostname} and not any(learner for _i, learner in after_ids.values())
    assert after_ids[lost.hostname][0] != old_id  # a new member, not the old one back
    # The new machine's kubelet registers its Node (the cluster's own write, not this command's): nothing else changed.
    new_node = f"/registry/minions/{lost.hostname}"
    for name in kept:
        assert after_ids[name] == before_ids[name]  # the same members
        assert {k: v for k, v in after_kv[name].items() if k != new_node} == \
            {k: v for k, v in before_kv[name].items() if k != new_node}  # every key and value as before the loss
    assert after_kv[lost.hostname] == after_kv[kept[0]] == after_kv[kept[1]]  # the new member holds the same data


def test_the_steps_are_said_before_they_run(sandbox_factory, monkeypatch, tmp_path):
    """One run with the rebuild done by a sandbox hook while it waits: the order of what it says."""
    sb = sandbox_factory(nodes=3)
    _in(sb, monkeypatch, tmp_path)
    sb.wait_voters(3)
    sb.lose(2, disk=True)
    out = _Trigger("Run this now, in another terminal", lambda: sb.replace_instance(2))
    code = replace_member.main([sb.members[1].hostname, "--yes", *FAST], out=out, err=io.StringIO())
    text = out.getvalue()
    assert code == 0, text
    order = ["About to replace the etcd member of", "confirmed by --yes", "step: a safety snapshot",
             "step: removing etcd member", "removed: 2 voting members left", "step: rebuild",
             f"{sb.members[1].hostname} is a voting member (etcd member ", "is a voting etcd member again"]
    at = [text.index(s) for s in order]
    assert at == sorted(at), text
    assert "Kubernetes Node" in text and "is Ready" in text


class _Trigger(io.StringIO):
    """A stdout that calls ``action`` once a line with ``when`` is written (the operator's other terminal)."""

    def __init__(self, when: str, action):
        super().__init__()
        self.when, self.action, self.done = when, action, False

    def write(self, s: str) -> int:
        n = super().write(s)
        if not self.done and self.when in s:
            self.done = True
            self.action()
        return n


def test_quorum_lost_is_refused_naming_restore_and_nothing_changes(sandbox_factory, monkeypatch, tmp_path):
    sb = sandbox_factory(nodes=3)
    talos = _in(sb, monkeypatch, tmp_path)
    sb.wait_voters(3)
    sb.lose(2)
    sb.lose(3)
    res = run_cli(replace_member.main, sb.members[2].hostname, "--yes", *FAST)
    assert res.code == ExitCode.REPLACE_REFUSED, res
    assert "talos-dr restore latest" in res.err and "Nothing was changed" in res.err
    assert "0 healthy voting member(s) answer" in res.err or "1 healthy voting member(s)" not in res.err
    assert not (talos / mr.JOURNAL_NAME).exists() and not list(talos.glob("snapshots/pre-restore-*"))
    sb.power_on(2)
    sb.power_on(3)
    assert len(sb.wait_voters(3)) == 3  # the same three members: nothing was removed


def test_a_healthy_member_is_not_replaced_and_no_tty_is_not_a_yes(sandbox_factory, monkeypatch, tmp_path):
    sb = sandbox_factory(nodes=3)
    talos = _in(sb, monkeypatch, tmp_path)
    before = _ids(sb) if sb.wait_voters(3) else {}
    res = run_cli(replace_member.main, sb.members[1].private_ip, "--yes", *FAST)
    assert res.code == ExitCode.REPLACE_REFUSED and "nothing to replace" in res.err, res
    sb.lose(2)
    res = run_cli(replace_member.main, sb.members[1].private_ip, *FAST)  # no --yes, stdin not a terminal
    assert res.code == ExitCode.NOT_CONFIRMED and "nothing was changed" in res.err, res
    assert "About to replace the etcd member of" in res.out
    assert not (talos / mr.JOURNAL_NAME).exists()
    sb.power_on(2)
    assert _ids(sb) == before or len(sb.wait_voters(3)) == 3


def test_an_instance_that_answers_with_a_broken_etcd_is_reset_and_rejoins(sandbox_factory, monkeypatch, tmp_path):
    sb = sandbox_factory(nodes=3)
    _in(sb, monkeypatch, tmp_path)
    sb.wait_voters(3)
    sb.put("/registry/configmaps/default/x", "1")
    before_id = _ids(sb)[sb.members[2].hostname][0]
    sb.set_faults(node=3, etcd_fails="corrupt database (fault injected by the test)")
    res = run_cli(replace_member.main, sb.members[2].hostname, "--yes", *FAST)
    assert res.code == 0, res
    assert "reset --graceful=false --reboot --system-labels-to-wipe EPHEMERAL" in res.out
    assert "pulumi up" not in res.out
    after = _ids(sb)
    assert after[sb.members[2].hostname][0] != before_id and not any(learner for _i, learner in after.values())


def _outputs_file(tmp_path: Path, nodes: list[dict]) -> Path:
    f = tmp_path / "outputs.json"
    fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"controlPlaneNodes": nodes, "clusterName": "c"}, fh)
    return f


@pytest.mark.parametrize("nodes, given, code, words", [
    ([{"name": "cp-1", "privateIp": "10.0.1.5", "publicIp": "203.0.113.1"}], "cp-1", ExitCode.REPLACE_REFUSED,
     "a lost member is a lost cluster"),
    ([{"name": f"cp-{i}", "privateIp": f"10.0.{i}.5", "publicIp": f"203.0.113.{i}"} for i in (1, 2, 3)], "cp-9",
     ExitCode.CONFIG, "no control-plane node of this stack is called 'cp-9'"),
])
def test_refused_before_any_node_is_asked(tmp_path, monkeypatch, nodes, given, code, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")
    res = run_cli(replace_member.main, given, "--outputs-file", str(_outputs_file(tmp_path, nodes)))
    assert res.code == code and words in res.err, res
    assert not (tmp_path / ".talos" / mr.JOURNAL_NAME).exists()
