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
