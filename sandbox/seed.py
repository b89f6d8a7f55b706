"""Deterministic Kubernetes-shaped keys the sandbox's etcd starts with.

Keys follow the API server's layout: ``/registry/<resource>/<namespace>/<name>``, cluster-scoped
``/registry/<resource>/<name>``. Values are JSON (the real API server writes protobuf, which nothing here reads);
Secrets carry the ``k8s:enc:secretbox:v1:key1:`` prefix Talos' encryption gives them, followed by bytes
derived from the cluster's secretbox key, so they look encrypted and differ between clusters.
"""

from __future__ import annotations

import hashlib
import hmac
import json

SECRETBOX_PREFIX = b"k8s:enc:secretbox:v1:key1:"

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
    elif resource == "deployments":
        obj["spec"] = {"replicas": 2 if namespace == "demo" else 1, "selector": {"matchLabels": {"app": name}}}
    elif resource == "services/specs":
        obj["spec"] = {"ports": [{"port": 443 if name == "kubernetes" else 80}], "type": "ClusterIP"}
    return obj


def seed_data(secretbox_key: bytes = b"sandbox") -> dict[str, bytes]:
    """Every seed key and its value, in key order."""
    out: dict[str, bytes] = {}
    for ns in _NAMESPACES:
        key = f"/registry/namespaces/{ns}"
        out[key] = json.dumps(_object("namespaces", ns, None, key), sort_keys=True).encode()
    for resource, items in _NAMESPACED.items():
        for item in items:
            ns, name = item.split("/", 1)
            key = f"/registry/{resource}/{ns}/{name}"
            body = json.dumps(_object(resource, name, ns, key), sort_keys=True).encode()
            if resource == "secrets":
                body = SECRETBOX_PREFIX + hmac.new(secretbox_key, body, hashlib.sha256).digest() + body[::-1]
            out[key] = body
    for resource, names in _CLUSTER_SCOPED.items():
        for name in names:
            key = f"/registry/{resource}/{name}"
            out[key] = json.dumps(_object(resource, name, None, key), sort_keys=True).encode()
    return dict(sorted(out.items()))
