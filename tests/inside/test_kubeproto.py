"""Decoding against upstream's own encodings, and secretbox values in the format kube-apiserver writes."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from nacl.secret import SecretBox

from dr.core import inventory, kubeproto, secretbox

UPSTREAM = Path(__file__).parent / "upstream"


@pytest.mark.parametrize("kind", ["Secret", "ConfigMap"])
def test_upstream_round_trip_data_decodes_to_the_same_object(kind):
    got = kubeproto.decode((UPSTREAM / f"core.v1.{kind}.pb").read_bytes())
    assert got == json.loads((UPSTREAM / f"core.v1.{kind}.json").read_text())


def test_for_apply_drops_server_set_fields_and_keeps_the_rest():
    obj = kubeproto.decode((UPSTREAM / "core.v1.Secret.pb").read_bytes())
    clean = kubeproto.for_apply(obj)
    meta = clean["metadata"]
    for gone in ("uid", "resourceVersion", "creationTimestamp", "generation", "selfLink", "managedFields",
                 "ownerReferences", "deletionTimestamp", "deletionGracePeriodSeconds"):
        assert gone not in meta
    assert meta["name"] == "nameValue" and meta["namespace"] == "namespaceValue"
    assert meta["labels"] == {"labelsKey": "labelsValue"} and meta["finalizers"] == ["finalizersValue"]
    assert clean["data"] == obj["data"] and clean["type"] == "typeValue"


def test_not_protobuf_is_a_decode_error():
    with pytest.raises(kubeproto.DecodeError):
        kubeproto.decode(b'{"kind":"Secret"}')
    with pytest.raises(kubeproto.DecodeError):
        kubeproto.decode(b"k8s\x00\xff\xff\xff")


def _apiserver_value(plaintext: bytes, key: bytes, name: str = "key2") -> bytes:
    """What kube-apiserver's secretbox transformer stores, built with NaCl directly (not with the code under test):
    the prefix ``k8s:enc:secretbox:v1:<name>:``, a random 24-byte nonce, then secretbox.Seal's output."""
    nonce = os.urandom(24)
    sealed = SecretBox(key).encrypt(plaintext, nonce).ciphertext  # tag + ciphertext
    return b"k8s:enc:secretbox:v1:" + name.encode() + b":" + nonce + sealed


def test_secretbox_value_is_decrypted_and_wrong_key_is_an_error():
    key = os.urandom(32)
    plain = (UPSTREAM / "core.v1.Secret.pb").read_bytes()
    value = _apiserver_value(plain, key)
    assert secretbox.open_value(value, key) == plain
    assert kubeproto.decode(secretbox.open_value(value, secretbox.key_from_secret(base64.b64encode(key).decode())))[
        "data"] == {"dataKey": "Ag=="}
    with pytest.raises(secretbox.WrongKey, match="does not open"):
        secretbox.open_value(value, os.urandom(32))
    with pytest.raises(secretbox.WrongKey, match="shorter"):
        secretbox.open_value(b"k8s:enc:secretbox:v1:key2:short", key)
    with pytest.raises(secretbox.NotSecretbox, match="aescbc"):
        secretbox.open_value(b"k8s:enc:aescbc:v1:key1:" + b"x" * 64, key)
    with pytest.raises(secretbox.BadKey):
        secretbox.key_from_secret(base64.b64encode(b"short").decode())


@pytest.mark.parametrize("key, expected", [
    (b"/registry/secrets/demo/web-tls", ("secrets", "demo", "web-tls")),
    (b"/registry/namespaces/demo", ("namespaces", None, "demo")),
    (b"/registry/minions/talos-cp", ("nodes", None, "talos-cp")),
    (b"/registry/services/specs/default/kubernetes", ("services", "default", "kubernetes")),
    (b"/registry/services/endpoints/default/kubernetes", ("endpoints", "default", "kubernetes")),
    (b"/registry/controllers/demo/rc", ("replicationcontrollers", "demo", "rc")),
    (b"/registry/ingress/demo/web", ("ingresses", "demo", "web")),
    (b"/registry/apiregistration.k8s.io/apiservices/v1.apps", ("apiservices.apiregistration.k8s.io", None,
                                                               "v1.apps")),
    (b"/registry/cert-manager.io/certificates/demo/web", ("certificates.cert-manager.io", "demo", "web")),
    (b"/registry/clusterroles/system:coredns", ("clusterroles", None, "system:coredns")),
    (b"compact_rev_key", (inventory.OUTSIDE, None, "compact_rev_key")),
])
def test_keys_name_type_namespace_and_name(key, expected):
    ref = inventory.parse_key(key)
    assert (ref.type, ref.namespace, ref.name) == expected


@pytest.mark.parametrize("value, expected", [
    (b"k8s\x00\n\x0c", "protobuf"), (b"k8s:enc:secretbox:v1:key2:xx", "encrypted:secretbox"),
    (b'{"kind":"Node"}', "json"), (b"\x00\x01", "other"),
])
def test_value_encodings(value, expected):
    assert inventory.encoding(value) == expected


def _objs(*pairs):
    return [inventory.Obj(inventory.parse_key(k.encode()), size, "protobuf") for k, size in pairs]


def test_summary_counts_sizes_filters_and_biggest():
    objs = _objs(("/registry/secrets/a/s1", 10), ("/registry/secrets/b/s2", 30), ("/registry/configmaps/a/c1", 20),
                 ("/registry/namespaces/a", 5), ("health", 1))
    inv = inventory.summarize(objs, top=2)
    assert (inv.objects, inv.bytes, inv.outside_keys) == (4, 65, 1)
    assert {k: (v.count, v.bytes) for k, v in inv.by_type.items()} == {"secrets": (2, 40), "configmaps": (1, 20),
                                                                        "namespaces": (1, 5)}
    assert {k: v.count for k, v in inv.by_namespace.items()} == {"a": 2, "b": 1, "(cluster)": 1}
    assert [o.ref.name for o in inv.biggest] == ["s2", "c1"]
    inv = inventory.summarize(objs, namespaces={"a"}, types={"secrets"})
    assert inv.objects == 1 and list(inv.by_type) == ["secrets"]


def test_diff_is_a_merge_of_key_ordered_streams():
    older = [(b"/registry/configmaps/a/same", b"1"), (b"/registry/configmaps/a/changed", b"1"),
             (b"/registry/secrets/a/deleted", b"1")]
    newer = [(b"/registry/configmaps/a/same", b"1"), (b"/registry/configmaps/a/changed", b"2"),
             (b"/registry/configmaps/b/created", b"1")]
    d = inventory.diff(sorted(older), sorted(newer))
    assert {(c.kind, c.ref.name) for c in d.changes} == {("changed", "changed"), ("deleted", "deleted"),
                                                         ("created", "created")}
    assert d.unchanged == 1
    assert d.by_namespace() == {"a": {"created": 0, "deleted": 1, "changed": 1},
                                "b": {"created": 1, "deleted": 0, "changed": 0}}
    assert inventory.diff(sorted(older), sorted(newer), namespaces={"b"}).count("created") == 1
