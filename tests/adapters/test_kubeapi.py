"""dr.adapters.kubeapi: the kubeconfig it accepts and what it refuses (the live calls are tested against the
sandbox's kube-apiserver stand-in in tests/commands/restore/test_stale_nodes.py)."""

from __future__ import annotations

import base64

import pytest
import yaml

from dr.adapters.kubeapi import KubeAPI, internal_ips, node_name
from dr.core.errors import ConfigError


def kubeconfig(server: str = "https://203.0.113.10:6443", **drop: bool) -> str:
    b64 = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    user = {"client-certificate-data": b64, "client-key-data": b64}
    for k in drop:
        user.pop(k.replace("_", "-"), None)
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "admin@c",
        "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority-data": b64}}],
        "users": [{"name": "admin@c", "user": user}],
        "contexts": [{"name": "admin@c", "context": {"cluster": "c", "user": "admin@c"}}],
    })


def test_the_current_contexts_server_and_credentials_are_read():
    t = KubeAPI.parse_kubeconfig(kubeconfig())
    assert (t.host, t.port, t.server) == ("203.0.113.10", 6443, "https://203.0.113.10:6443")
    assert t.ca_pem.startswith(b"-----BEGIN CERTIFICATE")


@pytest.mark.parametrize("text, why", [
    (kubeconfig("http://203.0.113.10:6443"), "not an https:// URL"),
    (kubeconfig(client_key_data=True), "not usable"),
    ("not: [yaml", "not usable"),
    ("", "not usable"),
])
def test_an_unusable_kubeconfig_is_one_clear_config_error(text, why):
    with pytest.raises(ConfigError) as exc:
        KubeAPI.parse_kubeconfig(text)
    secret = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    assert why in exc.value.message and secret not in exc.value.message  # never the credentials themselves


def test_node_fields():
    node = {"metadata": {"name": "ip-10-0-1-10"}, "status": {"addresses": [
        {"type": "InternalIP", "address": "10.0.1.10"}, {"type": "Hostname", "address": "ip-10-0-1-10"}]}}
    assert internal_ips(node) == ["10.0.1.10"] and node_name(node) == "ip-10-0-1-10"
    assert internal_ips({"metadata": {}}) == []
