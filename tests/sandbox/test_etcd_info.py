"""EtcdStatus and EtcdAlarmList on the node's apid (sandbox/node_apid.py), as Talos v1.13.9's machined answers them
(sandbox/CONFORMANCE.md rows "EtcdStatus", "EtcdAlarmList", "EtcdStatus/EtcdAlarmList with etcd down"): the real
etcd's numbers, one message per node, the roles machined.go allows, and a NOSPACE alarm etcd raises itself when its
quota is filled."""

from __future__ import annotations

import time

import pytest

from dr.adapters.talosapi import TalosClient, messages
from dr.adapters.talosctl import load_talosconfig, talosconfig_credentials
from dr.core.credentials import issue_certificate
from dr.core.errors import NodeError, NodeUnreachable
from sandbox import etcd
from sandbox.api import Sandbox

pytestmark = pytest.mark.slow
QUOTA = 4 * 1024 * 1024


def client(sb: Sandbox, creds=None, nodes=None) -> TalosClient:
    creds = creds or talosconfig_credentials(load_talosconfig(sb.talosconfig))
    return TalosClient(sb.public_ip, creds, port=sb.info.apid_port, nodes=[sb.private_ip] if nodes is None else nodes,
                       timeout=30)


def role_creds(sb: Sandbox, role: str):
    import base64
    from datetime import UTC, datetime, timedelta

    from dr.adapters.talosapi import TalosCredentials
    from sandbox.pki import ClusterSecrets

    s = ClusterSecrets.load(sb.node.paths.secrets)
    ca, key = base64.b64decode(s.os_ca_crt), base64.b64decode(s.os_ca_key)
    now = datetime.now(UTC)
    cert, k = issue_certificate(ca, key, organization=role, common_name="t", not_before=now - timedelta(hours=1),
                                not_after=now + timedelta(days=1))
    return TalosCredentials(ca_pem=ca, cert_pem=cert, key_pem=k)


def test_status_and_alarms_are_the_real_etcds_then_nospace(sandbox_factory):
    sb = sandbox_factory(with_s3=False, etcd_quota_bytes=QUOTA)
    health = client(sb).etcd_health(QUOTA)
    real = etcd._call(sb.etcd_endpoint, "maintenance/status", {})  # asked after: the DB may only have grown
    assert 0 < health.db_size <= int(real["dbSize"]) and 0 < health.db_size_in_use <= health.db_size
    assert health.member_id == int(real["header"]["member_id"]) and health.alarms == () and health.quota == QUOTA
    # os:etcd:backup and os:reader may ask (machined.go:69,78); a role outside the list may not
    for role in ("os:etcd:backup", "os:reader", "os:operator"):
        assert client(sb, role_creds(sb, role)).etcd_health(QUOTA).db_size > 0
    with pytest.raises(NodeError, match="etcd status .* refused"):
        client(sb, role_creds(sb, "os:impersonator")).etcd_health(QUOTA)

    filled = sb.raise_nospace_alarm()  # etcd refuses a put for lack of space and raises NOSPACE itself
    assert filled > 0 and sb.etcd_alarms() == ["NOSPACE"]
    health = client(sb).etcd_health(QUOTA)
    assert health.alarms == ("NOSPACE",) and health.percent >= 100 * (QUOTA - 1024 * 1024) / QUOTA
    assert any("NOSPACE" in e for e in health.errors)  # etcd's own status errors name it too


def test_wire_format_is_machineds(sandbox_factory):
    """One EtcdStatus / EtcdAlarm message per node, member_status and member_alarms at the machine.proto v1.13.9
    field numbers; a proxied call (``nodes``) carries the node's name as apid appends it."""
    from sandbox.apid import etcd_info

    sb = sandbox_factory(with_s3=False)
    raw = etcd_info(messages.ETCD_STATUS_METHOD, sb.etcd_endpoint, hostname=sb.private_ip).SerializeToString()
    resp = messages.EtcdStatusResponse.FromString(raw)
    (one,) = resp.messages
    assert one.metadata.hostname == sb.private_ip and one.member_status.db_size > 0
    assert raw[0] == 0x0A  # field 1 (messages), length-delimited
    alarms = messages.EtcdAlarmListResponse.FromString(etcd_info(messages.ETCD_ALARM_LIST_METHOD, sb.etcd_endpoint)
                                                       .SerializeToString())
    (a,) = alarms.messages
    assert list(a.member_alarms) == [] and not a.HasField("metadata")  # served locally: no metadata


def test_etcd_down_hangs_and_the_client_says_etcd_is_not_answering(sandbox_factory):
    sb = sandbox_factory(with_s3=False)
    sb.set_faults(etcd_fails="data corrupt")
    began = time.monotonic()
    with pytest.raises(NodeError, match="etcd on the node is not answering"):
        client(sb).etcd_health(timeout=2)
    assert time.monotonic() - began < 10
    sb.set_faults(unreachable=True)
    with pytest.raises(NodeUnreachable):
        client(sb).etcd_health(timeout=2)


def test_member_list_is_the_real_etcds_members(sandbox_factory):
    """EtcdMemberList (sandbox/CONFORMANCE.md row "EtcdMemberList"): the client's ``etcd_members`` against the node's
    apid gives the real etcd's members with the fields machined fills; os:etcd:backup may ask; a role outside
    machined.go:74's list may not; with etcd down the call hangs and the client says etcd is not answering."""
    sb = sandbox_factory(with_s3=False)
    real = etcd.member_list(sb.etcd_endpoint)
    (member,) = client(sb, role_creds(sb, "os:etcd:backup")).etcd_members()
    assert member.id == real[0]["id"] != 0 and member.name == real[0]["name"] == sb.info.etcd_name
    assert member.peer_urls == tuple(real[0]["peer_urls"]) and member.client_urls == tuple(real[0]["client_urls"])
    assert member.is_learner is False
    # query_local=False answers the same one-member cluster
    assert client(sb).etcd_members(query_local=False) == (member,)
    # the member id EtcdStatus reports is the listed one
    assert client(sb).etcd_health().member_id == member.id
    with pytest.raises(NodeError, match="etcd member list .* refused"):
        client(sb, role_creds(sb, "os:impersonator")).etcd_members()
    sb.set_faults(etcd_fails="data corrupt")
    with pytest.raises(NodeError, match="etcd on the node is not answering"):
        client(sb).etcd_members(timeout=2)


def test_member_list_wire_format_and_no_leader(tmp_path):
    """The response at machine.proto v1.13.9's field numbers (EtcdMember from 2; legacy_members the names), the
    request's query_local read from the wire; a member with no leader (a two-member etcd that lost its peer) answers
    `etcdserver: no leader`: as the call's status served locally, as the metadata error when apid proxied it."""
    import os
    import signal

    from dr.adapters.ports import free_port
    from sandbox import apid as sapid

    c1, p1, c2, p2 = (free_port() for _ in range(4))
    initial = f"a=http://127.0.0.1:{p1},b=http://127.0.0.1:{p2}"
    procs = []
    for name, c, p in (("a", c1, p1), ("b", c2, p2)):
        import subprocess

        procs.append(subprocess.Popen(
            [etcd.ETCD, "--name", name, "--data-dir", str(tmp_path / name), "--listen-client-urls",
             f"http://127.0.0.1:{c}", "--advertise-client-urls", f"http://127.0.0.1:{c}", "--listen-peer-urls",
             f"http://127.0.0.1:{p}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{p}", "--initial-cluster",
             initial], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        ep = f"http://127.0.0.1:{c1}"
        deadline = time.monotonic() + 20
        while True:
            try:
                listed = etcd.member_list(ep)
                break
            except etcd.EtcdFailure:
                assert time.monotonic() < deadline, "the two-member etcd did not come up"
                time.sleep(0.2)
        req = messages.EtcdMemberListRequest(query_local=True).SerializeToString()
        assert req == b"\x08\x01"  # field 1, varint: query_local
        raw = sapid.etcd_info(messages.ETCD_MEMBER_LIST_METHOD, ep, request=req).SerializeToString()
        (one,) = messages.EtcdMemberListResponse.FromString(raw).messages
        assert sorted(m.hostname for m in one.members) == ["a", "b"] == sorted(one.legacy_members)
        assert {m.id for m in one.members} == {m["id"] for m in listed} and not one.HasField("metadata")
        member_raw = one.members[0].SerializeToString()
        assert member_raw[0] == 0x10  # EtcdMember.id is field 2 (varint)
        procs[1].send_signal(signal.SIGTERM)
        procs[1].wait(10)
        deadline = time.monotonic() + 20
        while True:  # etcd's CheckQuorum: the leader steps down within an election timeout
            try:
                etcd.member_list(ep)
            except etcd.EtcdFailure as exc:  # first the leader times out asking for a quorum's read index
                if "etcdserver: no leader" in str(exc):
                    break
            assert time.monotonic() < deadline, "the member kept a leader with its peer gone"
            time.sleep(0.2)
        with pytest.raises(sapid._Abort, match="etcdserver: no leader") as info:
            sapid.etcd_info(messages.ETCD_MEMBER_LIST_METHOD, ep, request=req)
        assert info.value.code == 14
        proxied = sapid.etcd_info(messages.ETCD_MEMBER_LIST_METHOD, ep, hostname="10.0.1.10", request=req)
        (one,) = proxied.messages
        assert one.metadata.hostname == "10.0.1.10" and one.metadata.status.code == 14
        assert one.metadata.error == "rpc error: code = Unavailable desc = etcdserver: no leader" and not one.members
        status = messages.EtcdStatusResponse.FromString(
            sapid.etcd_info(messages.ETCD_STATUS_METHOD, ep).SerializeToString()).messages[0].member_status
        assert status.leader == 0 and "etcdserver: no leader" in list(status.errors)
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                p.wait(10)
