"""Deterministic Kubernetes objects the sandbox's etcd starts with, stored as kube-apiserver stores them.

Keys follow the API server's layout: ``/registry/<resource>/<namespace>/<name>``, cluster-scoped
``/registry/<resource>/<name>`` (dr/core/inventory.py cites it). Values are what kube-apiserver writes: the
``k8s\0`` protobuf envelope around the object (dr/core/kubeproto.py cites the format). Secrets and ConfigMaps are
whole (metadata, type, data); other types carry their metadata only (every top-level type's field 1 is its
ObjectMeta, so a metadata-only message is valid for each; spec and status are left out, nothing here reads them).
Secrets are then encrypted as Talos configures kube-apiserver to (dr/core/secretbox.py cites it): secretbox under
key name ``key2`` with the cluster's ``secretboxencryptionsecret``. kube-apiserver draws a random nonce; here the nonce
is derived from the key and the etcd key, so the seed is the same for the same cluster and tests can compare with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from dr.core import kubeproto, secretbox

SECRETBOX_PREFIX = secretbox.PREFIX + secretbox.TALOS_KEY_NAME.encode() + b":"

_NAMESPACES = ["default", "kube-system", "kube-public", "kube-node-lease", "demo"]
_NAMESPACED = {
    "deployments": ["kube-system/coredns", "demo/web", "demo/api"],
    "replicasets": ["kube-system/coredns-6d4b75cb6d", "demo/web-7c5ddbdf54"],
    "pods": ["kube-system/coredns-6d4b75cb6d-x7k2p", "demo/web-7c5ddbdf54-4xq9z", "demo/api-5f9c8d7b6-lm2nb"],
    "configmaps": [
        "default/kube-root-ca.crt",
        "kube-system/coredns",
        "kube-system/kube-proxy",
        "demo/kube-root-ca.crt",
        "demo/web-config",
    ],
    "secrets": ["kube-system/bootstrap-token-abcdef", "demo/web-tls", "demo/api-token"],
    "services/specs": ["default/kubernetes", "kube-system/kube-dns", "demo/web", "demo/api"],
    "serviceaccounts": [
        "default/default",
        "kube-system/default",
        "kube-system/coredns",
        "demo/default",
        "demo/web",
    ],
}
_CLUSTER_SCOPED = {
    "minions": ["talos-sandbox-cp"],
    "clusterroles": ["cluster-admin", "system:coredns"],
    "clusterrolebindings": ["cluster-admin", "system:coredns"],
}

_KIND = {
    "namespaces": "Namespace",
    "deployments": "Deployment",
    "replicasets": "ReplicaSet",
    "pods": "Pod",
    "configmaps": "ConfigMap",
    "secrets": "Secret",
    "services/specs": "Service",
    "serviceaccounts": "ServiceAccount",
    "minions": "Node",
    "clusterroles": "ClusterRole",
    "clusterrolebindings": "ClusterRoleBinding",
}
_API = {"deployments": "apps/v1", "replicasets": "apps/v1"}
_API.update({k: "rbac.authorization.k8s.io/v1" for k in ("clusterroles", "clusterrolebindings")})


def _uid(key: str) -> str:
    h = hashlib.sha256(key.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _object(resource: str, name: str, namespace: str | None, key: str) -> dict:
    meta: dict = {"name": name, "uid": _uid(key), "creationTimestamp": "2026-01-01T00:00:00Z"}
    if namespace:
        meta["namespace"] = namespace
    obj: dict = {"apiVersion": _API.get(resource, "v1"), "kind": _KIND[resource], "metadata": meta}
    if resource == "configmaps":
        obj["data"] = {"config": f"# {namespace}/{name}\nkey: value\n"}
    elif resource == "secrets":
        obj.update(_secret_content(name, key))
    elif resource == "deployments":
        obj["spec"] = {"replicas": 2 if namespace == "demo" else 1, "selector": {"matchLabels": {"app": name}}}
    elif resource == "services/specs":
        obj["spec"] = {"ports": [{"port": 443 if name == "kubernetes" else 80}], "type": "ClusterIP"}
    return obj


def _secret_content(name: str, key: str) -> dict:
    """A Secret's type and data: deterministic bytes per key, like the tokens and keys a cluster holds."""
    def value(field: str) -> str:
        return base64.b64encode(hashlib.sha256(f"{key}#{field}".encode()).digest()).decode()

    if name.startswith("bootstrap-token-"):
        return {"type": "bootstrap.kubernetes.io/token",
                "data": {"token-id": base64.b64encode(name.rsplit("-", 1)[1].encode()).decode(),
                         "token-secret": value("token-secret")}}
    if name.endswith("-tls"):
        return {"type": "kubernetes.io/tls", "data": {"tls.crt": value("tls.crt"), "tls.key": value("tls.key")}}
    return {"type": "Opaque", "data": {"token": value("token")}}


def secretbox_key(secret: bytes | str) -> bytes:
    """The 32-byte key from the bundle's base64 ``secretboxencryptionsecret``; anything else (a test's word) is
    stretched into a key with SHA-256, so the seed still encrypts."""
    text = secret.decode() if isinstance(secret, bytes) else secret
    try:
        return secretbox.key_from_secret(text)
    except secretbox.BadKey:
        return hashlib.sha256(text.encode()).digest()


def encode(obj: dict, key: str, box_key: bytes) -> bytes:
    """``obj`` as kube-apiserver would store it under ``key`` (see the module docstring)."""
    if obj["kind"] in ("Secret", "ConfigMap"):
        value = kubeproto.encode(obj)
    else:
        value = kubeproto.encode_metadata_only(obj.get("apiVersion", "v1"), obj["kind"], obj["metadata"])
    if obj["kind"] == "Secret":
        nonce = hmac.new(box_key, key.encode(), hashlib.sha256).digest()[:secretbox.NONCE]
        value = secretbox.seal(value, box_key, nonce)
    return value


def seed_data(secretbox_key_text: bytes | str = b"sandbox") -> dict[str, bytes]:
    """Every seed key and its value, in key order; ``secretbox_key_text`` is the cluster's base64
    ``secretboxencryptionsecret``."""
    box_key = secretbox_key(secretbox_key_text)
    out: dict[str, bytes] = {}
    for ns in _NAMESPACES:
        key = f"/registry/namespaces/{ns}"
        out[key] = encode(_object("namespaces", ns, None, key), key, box_key)
    for resource, items in _NAMESPACED.items():
        for item in items:
            ns, name = item.split("/", 1)
            key = f"/registry/{resource}/{ns}/{name}"
            out[key] = encode(_object(resource, name, ns, key), key, box_key)
    for resource, names in _CLUSTER_SCOPED.items():
        for name in names:
            key = f"/registry/{resource}/{name}"
            out[key] = encode(_object(resource, name, None, key), key, box_key)
    return dict(sorted(out.items()))
