"""Backups on the three-node sandbox (`Sandbox.up(dir, nodes=3)`: three real etcd members of one cluster, each node with
its own apid): `talos-dr backup` and the scheduled Lambda ask every member, snapshot from a healthy member of the
majority and record which; with two members lost they refuse (exit 28) and say how to take a raw copy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dr.adapters import s3
from dr.commands import backup
from dr.core.errors import ExitCode, NoQuorum
from dr.core.integrity import verify_file
from sandbox import etcd
from sandbox.api import Sandbox
from sandbox.testing import require_etcd
from snapshot_lambda import handler as lh
from tests.support import emf
from tests.support.scheduled import lambda_env
from tests.support.tools import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def three(tmp_path_factory) -> Iterator[Sandbox]:
    """One three-node sandbox with S3; each test powers back on what it lost."""
    require_etcd()
    sb = Sandbox.up(tmp_path_factory.mktemp("ha") / "sb", nodes=3, reboot_seconds=0.3,
                    bootstrap_not_ready_seconds=0.2)
    yield sb
    sb.down()


@pytest.fixture
def ha(three, tmp_path, monkeypatch) -> Iterator[Sandbox]:
    for k, v in three.env.items():
        monkeypatch.setenv(k, v)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("DR_TALOS_DIR", ".talos")
    three.wait_voters(3, timeout=60)
    lost: list[int] = []
    three.lost = lost  # type: ignore[attr-defined]
    yield three
    for i in lost:
        three.power_on(i)
    three.wait_voters(3, timeout=60)


def _lose(sb: Sandbox, *indexes: int) -> None:
    for i in indexes:
        sb.lose(i)
        sb.lost.append(i)  # type: ignore[attr-defined]


def _nodes_env(sb: Sandbox) -> str:
    """TALOS_DR_NODES for the sandbox: each node's apid address with its port (the sandbox's apids listen on the
    Elastic IPs, on 50000 unless another sandbox holds it; the stack writes bare private IPs)."""
    return ",".join(m.apid_endpoint if ":" in m.apid_endpoint else f"{m.apid_endpoint}:50000" for m in sb.members)


def _head(sb: Sandbox, location: str) -> dict:
    bucket, key = location.removeprefix("s3://").split("/", 1)
    return s3.make_client(sb.region).head_object(Bucket=bucket, Key=key)["Metadata"]


def test_backup_with_one_node_down_takes_it_from_a_healthy_member_and_records_it(ha):
    _lose(ha, 2)
    res = run_cli(backup.main, "--save-to-s3", "--json")
    assert res.code == 0, res
    doc = json.loads(res.out)
    up = {m.private_ip: m for m in ha.members if m.index != 2}
    member = doc["member"]
    assert member["ip"] in up and member["quorum"] == "2/3" and member["node"] == up[member["ip"]].hostname
    ids = {m["name"]: m["id"].lstrip("0") for m in ha.etcd_members()}
    assert member["id"] == ids[member["node"]]
    # the narrative names every member's state and the one used
    assert f"{ha.members[1].hostname} ({ha.members[1].private_ip}): not answering" in res.err
    assert f"snapshot from {member['node']} ({member['ip']}), member {member['id']}" in res.err
    meta = _head(ha, doc["s3"])
    assert meta[s3.META_MEMBER_IP] == member["ip"] and meta[s3.META_MEMBER_ID] == member["id"]
    assert meta[s3.META_MEMBER_NODE] == member["node"] and meta[s3.META_QUORUM] == "2/3"
    # the snapshot holds the cluster's keys
    assert verify_file(Path(doc["snapshot"])).size > 0


def test_backup_with_two_nodes_down_refuses_with_exit_28_and_the_raw_copy(ha):
    _lose(ha, 2, 3)
    res = run_cli(backup.main, "--save-to-s3")
    assert res.code == ExitCode.NO_QUORUM == 28, res
    one = ha.members[0]
    assert "etcd has no quorum" in res.err and "no snapshot was taken" in res.err
    assert f"{one.hostname} ({one.private_ip}): no leader" in res.err
    assert f"talos-dr backup --node {one.private_ip} --no-quorum-ok" in res.err
    assert f"talosctl -n {one.private_ip} -e {one.public_ip} cp /var/lib/etcd/member/snap/db ." in res.err
    assert "talos-dr restore --from-data-dir-copy ./db" in res.err
    assert not list(Path(".talos/snapshots").glob("*.db"))  # nothing taken, nothing half-written
    # asked for, a snapshot from the one member left is taken, and says it has no quorum
    res = run_cli(backup.main, "--node", one.private_ip, "--no-quorum-ok", "--json")
    assert res.code == 0, res
    assert json.loads(res.out)["member"]["quorum"] == "none" and "may miss the latest writes" in res.err


def test_explicit_node_is_used_after_the_quorum_check(ha):
    _lose(ha, 3)
    target = ha.members[2]
    res = run_cli(backup.main, "--node", target.private_ip)
    assert res.code == ExitCode.NODE_UNREACHABLE, res  # the node named is down: its snapshot fails, after a warning
    assert f"{target.hostname} ({target.private_ip}) is not answering" in res.err
    other = ha.members[0]
    res = run_cli(backup.main, "--node", other.private_ip, "--json")
    assert res.code == 0, res
    assert json.loads(res.out)["member"]["ip"] == other.private_ip


def test_the_lambda_with_one_node_down_snapshots_from_a_healthy_member(ha, monkeypatch, capsys):
    env = lambda_env(ha)
    env[lh.ENV_NODES] = _nodes_env(ha)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    _lose(ha, 1)  # the bootstrap node, the one TALOS_DR_NODE names
    out = lh.handler({}, None)
    lines = emf.emf_lines(capsys.readouterr().out)
    assert len(lines) == 1 and emf.problems(lines[0]) == []
    root = json.loads(lines[0])
    assert root["SnapshotSuccess"] == 1.0 and root["EtcdQuorum"] == "2/3"
    assert root["EtcdMemberIp"] in {m.public_ip for m in ha.members[1:]}
    assert root["EtcdMemberNode"] in {m.hostname for m in ha.members[1:]}
    assert any("not answering" in m for m in root["EtcdMembers"])
    meta = s3.make_client(ha.region).head_object(Bucket=out["bucket"], Key=out["key"])["Metadata"]
    assert meta[s3.META_MEMBER_NODE] == root["EtcdMemberNode"] and meta[s3.META_QUORUM] == "2/3"


def test_the_lambda_without_quorum_fails_with_28_and_reports_it(ha, monkeypatch, capsys):
    env = lambda_env(ha)
    env[lh.ENV_NODES] = _nodes_env(ha)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    _lose(ha, 2, 3)
    with pytest.raises(NoQuorum) as info:
        lh.handler({}, None)
    assert info.value.exit_code == 28
    root = json.loads(emf.emf_lines(capsys.readouterr().out)[0])
    assert root["SnapshotSuccess"] == 0.0 and root["EtcdQuorum"] == "none"


def test_status_shows_each_members_state(ha):
    """`talos-dr status` with three nodes: an `etcd members` line, OK with all three, WARN with one lost (naming
    it), FAIL without a quorum; the etcd line then comes from a healthy member."""
    from dr.commands import status

    def members_line(res) -> dict:
        checks = {c["name"]: c for c in json.loads(res.out)["checks"]}
        return checks["etcd members"], checks["etcd on the node"]

    line, etcd_line = members_line(run_cli(status.main, "--json"))
    assert line["state"] == "OK" and line["summary"].startswith("3 of 3 voting members healthy")
    assert etcd_line["state"] == "OK"
    _lose(ha, 3)
    line, etcd_line = members_line(run_cli(status.main, "--json"))
    assert line["state"] == "WARN" and f"{ha.members[2].hostname} ({ha.members[2].private_ip}): not answering" in (
        line["summary"]) and etcd_line["state"] == "OK"
    _lose(ha, 2)
    line, etcd_line = members_line(run_cli(status.main, "--json"))
    assert line["state"] == "FAIL" and "NO quorum" in line["summary"]


def _leader_index(sb: Sandbox) -> int:
    """The sandbox index (1-3) of the node whose etcd member leads now."""
    leader = etcd.status(sb.node_at(1).info.etcd_endpoint)["leader"]
    name = next(m["name"] for m in sb.etcd_members() if int(m["id"], 16) == leader)
    return next(m.index for m in sb.members if m.hostname == name)


@pytest.fixture
def followers_die_mid_snapshot(ha) -> Iterator[tuple[Sandbox, int]]:
    """Every follower's node cuts its snapshot stream half-way (sandbox fault ``die_mid_snapshot``); the leader's
    serves it whole. The follower comes first in the choice, so the snapshot has to fall back to reach the leader."""
    lead = _leader_index(ha)
    others = [m.index for m in ha.members if m.index != lead]
    for i in others:
        ha.set_faults(i, die_mid_snapshot=True)
    try:
        yield ha, lead
    finally:
        for i in others:
            ha.set_faults(i, die_mid_snapshot=None)


def test_backup_falls_back_to_the_next_healthy_member_when_a_snapshot_fails(followers_die_mid_snapshot):
    ha, lead = followers_die_mid_snapshot
    leader = ha.node_at(lead).info
    res = run_cli(backup.main, "--save-to-s3", "--json")
    assert res.code == 0, res
    doc = json.loads(res.out)
    # the member actually used is the one recorded, in --json and in the object's metadata
    assert doc["member"]["ip"] == ha.members[lead - 1].private_ip, (doc, res.err)
    assert _head(ha, doc["s3"])[s3.META_MEMBER_IP] == doc["member"]["ip"]
    warnings = [line for line in res.err.splitlines() if "warning: the snapshot from" in line]
    # both followers were tried first, each failure said, nothing of it kept (should etcd have moved its leadership
    # meanwhile, fewer were tried: every one tried is still a failing node's, and the one used the good one)
    if _leader_index(ha) == lead:
        assert len(warnings) == 2, res.err
        assert f"trying {ha.members[lead - 1].hostname} ({ha.members[lead - 1].private_ip})" in warnings[-1]
    assert all("was cut after" in w and "nothing of it was kept" in w for w in warnings)
    failing = {f"{m.hostname} ({m.private_ip}) failed" for m in ha.members if m.index != lead}
    assert all(any(f in w for f in failing) for w in warnings), res.err
    assert sorted(p.name for p in Path(".talos/snapshots").iterdir() if p.name != ".lock") == [
        Path(doc["snapshot"]).name], "a failed attempt left a file"
    assert verify_file(Path(doc["snapshot"])).size > 0
    assert leader.hostname == doc["member"]["node"]


def test_backup_named_node_does_not_fall_back(followers_die_mid_snapshot):
    ha, lead = followers_die_mid_snapshot
    follower = next(m for m in ha.members if m.index != lead)
    res = run_cli(backup.main, "--node", follower.private_ip)
    assert res.code == ExitCode.TRUNCATED_SNAPSHOT, res
    assert "trying" not in res.err and not list(Path(".talos/snapshots").glob("*.db"))


def test_the_lambda_falls_back_to_the_next_member_and_names_the_failed_ones(followers_die_mid_snapshot, monkeypatch,
                                                                            capsys):
    ha, lead = followers_die_mid_snapshot
    env = lambda_env(ha)
    env[lh.ENV_NODES] = _nodes_env(ha)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    client = s3.make_client(ha.region)

    def keys() -> set[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=env[lh.ENV_BUCKET])
        return {o["Key"] for page in pages for o in page.get("Contents", [])}

    before = keys()
    out = lh.handler({}, None)
    captured = capsys.readouterr()
    lines = emf.emf_lines(captured.out)
    assert len(lines) == 1 and emf.problems(lines[0]) == []
    root = json.loads(lines[0])
    assert root["SnapshotSuccess"] == 1.0 and root["EtcdMemberNode"] == ha.members[lead - 1].hostname
    failed = root.get("EtcdMembersFailed", [])
    assert len(failed) == 2 or _leader_index(ha) != lead  # as in the backup's test
    assert all("TruncatedSnapshot" in f for f in failed)
    assert {f.split(" ")[0] for f in failed} <= {m.hostname for m in ha.members if m.index != lead}
    meta = s3.make_client(ha.region).head_object(Bucket=out["bucket"], Key=out["key"])["Metadata"]
    assert meta[s3.META_MEMBER_NODE] == ha.members[lead - 1].hostname
    # one new object: the failed attempts left none
    assert {k for k in keys() - before if "etcd-snapshot-" in k} == {out["key"]}
    assert not client.list_multipart_uploads(Bucket=out["bucket"]).get("Uploads")
