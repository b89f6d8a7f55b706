"""The sandbox cluster's secrets: a Talos OS CA and admin client certificate, Kubernetes CAs, and the files
built from them (talosconfig, kubeconfig, control-plane machine config, secrets bundle).

Shapes follow ``talosctl gen secrets`` / ``gen config`` output. The CAs and certificates come from the one factory
production minting uses (``dr.core.credentials.new_ca`` / ``issue_certificate``), so each CA has a random 20-byte
SubjectKeyIdentifier like Talos's and every certificate's AuthorityKeyIdentifier names it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets as _secrets
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from dr.core.credentials import certificate_roles, issue_certificate, load_private_key, new_ca

ADMIN_ROLE = "os:admin"
ROLES = ("os:admin", "os:operator", "os:reader", "os:etcd:backup", "os:image:verifier", "os:meta:writer")


def _b64(pem: bytes) -> str:
    return base64.b64encode(pem).decode()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def issue_client_cert(ca_crt_pem: bytes, ca_key_pem: bytes, cn: str, orgs: list[str], days: int = 365):
    """(certificate PEM, key PEM): a client certificate signed by the given CA, with ``orgs`` as Organization (Talos
    roles). The key type follows the CA's, as siderolabs/crypto ``x509/keypair.go`` NewKeyPair picks it: Ed25519 under
    Talos's Ed25519 OS CA (``talosctl gen config``'s admin certificate), ECDSA P-256 under an ECDSA CA."""
    ca_key = load_private_key(ca_key_pem)
    key = ed25519.Ed25519PrivateKey.generate() if isinstance(ca_key, ed25519.Ed25519PrivateKey) else None
    now = _now()
    return issue_certificate(
        ca_crt_pem, ca_key_pem, organization=orgs, common_name=cn, not_before=now - dt.timedelta(minutes=5),
        not_after=now + dt.timedelta(days=days), key=key,
    )


def verify_client_cert(ca_crt_pem: bytes, crt_pem: bytes) -> list[str] | None:
    """The roles (Organization values) of ``crt_pem`` if the CA signed it and it is in date, else None."""
    try:
        ca = x509.load_pem_x509_certificate(ca_crt_pem)
        crt = x509.load_pem_x509_certificate(crt_pem)
        crt.verify_directly_issued_by(ca)  # issuer name and signature (Ed25519 or ECDSA)
    except Exception:
        return None
    now = _now()
    if not (crt.not_valid_before_utc <= now <= crt.not_valid_after_utc):
        return None
    return certificate_roles(crt_pem)


@dataclass
class ClusterSecrets:
    """The bundle ``talosctl gen secrets`` makes, PEMs base64-encoded like in machine configs."""

    cluster_name: str
    bundle: dict

    @property
    def os_ca_crt(self) -> str:
        return self.bundle["certs"]["os"]["crt"]

    @property
    def os_ca_key(self) -> str:
        return self.bundle["certs"]["os"]["key"]

    @property
    def fingerprint(self) -> str:
        """Identifies these secrets (the OS CA's SHA-256) without revealing them."""
        return hashlib.sha256(base64.b64decode(self.os_ca_crt)).hexdigest()

    @classmethod
    def generate(cls, cluster_name: str) -> ClusterSecrets:
        # As Talos's secrets bundle makes them (pkg/machinery/config/generate/secrets/ca.go, bundle.go at v1.13.9):
        # an Ed25519 OS CA, ECDSA etcd, Kubernetes and aggregator CAs, an ECDSA service-account key.
        os_crt, os_key = new_ca("talos")
        k8s_crt, k8s_key = new_ca("kubernetes", key_type="ecdsa")
        agg_crt, agg_key = new_ca(None, common_name="front-proxy", key_type="ecdsa")
        etcd_crt, etcd_key = new_ca("etcd", key_type="ecdsa")
        sa_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
        tok = _secrets.token_hex(11)
        bundle = {
            "cluster": {"id": base64.b64encode(_secrets.token_bytes(32)).decode(),
                        "secret": base64.b64encode(_secrets.token_bytes(32)).decode()},
            "secrets": {
                "bootstraptoken": f"{tok[:6]}.{tok[6:22]}",
                "secretboxencryptionsecret": base64.b64encode(_secrets.token_bytes(32)).decode(),
            },
            "trustdinfo": {"token": f"{_secrets.token_hex(3)}.{_secrets.token_hex(8)}"},
            "certs": {
                "etcd": {"crt": _b64(etcd_crt), "key": _b64(etcd_key)},
                "k8s": {"crt": _b64(k8s_crt), "key": _b64(k8s_key)},
                "k8saggregator": {"crt": _b64(agg_crt), "key": _b64(agg_key)},
                "k8sserviceaccount": {"key": _b64(sa_key)},
                "os": {"crt": _b64(os_crt), "key": _b64(os_key)},
            },
        }
        return cls(cluster_name, bundle)

    def to_json(self) -> str:
        return json.dumps({"clusterName": self.cluster_name, **self.bundle}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ClusterSecrets:
        data = json.loads(text)
        name = data.pop("clusterName")
        return cls(name, data)

    @classmethod
    def load(cls, path: Path) -> ClusterSecrets:
        return cls.from_json(path.read_text())

    # --- files built from the secrets -----------------------------------------------------------------------

    def talosconfig(self, node_ip: str, roles: list[str] | None = None, context: str | None = None) -> str:
        """A talosconfig (YAML) with a fresh client certificate for ``roles`` (default os:admin)."""
        crt, key = issue_client_cert(
            base64.b64decode(self.os_ca_crt), base64.b64decode(self.os_ca_key), "admin", roles or [ADMIN_ROLE]
        )
        ctx = context or self.cluster_name
        doc = {
            "context": ctx,
            "contexts": {
                ctx: {
                    "endpoints": [node_ip],
                    "nodes": [node_ip],
                    "ca": self.os_ca_crt,
                    "crt": _b64(crt),
                    "key": _b64(key),
                }
            },
        }
        return yaml.safe_dump(doc, sort_keys=False)

    def kubeconfig(self, endpoint: str) -> str:
        k8s = self.bundle["certs"]["k8s"]
        crt, key = issue_client_cert(
            base64.b64decode(k8s["crt"]), base64.b64decode(k8s["key"]), "admin", ["system:masters"]
        )
        name = self.cluster_name
        user = f"admin@{name}"
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": name, "cluster": {"server": endpoint, "certificate-authority-data": k8s["crt"]}}],
            "users": [{"name": user, "user": {"client-certificate-data": _b64(crt), "client-key-data": _b64(key)}}],
            "contexts": [{"name": user, "context": {"cluster": name, "namespace": "default", "user": user}}],
            "current-context": user,
            "preferences": {},
        }
        return yaml.safe_dump(doc, sort_keys=False)

    def controlplane_config(self, endpoint: str, node_ip: str, talos_version: str, k8s_version: str) -> str:
        """A control-plane machine config (v1alpha1) for this cluster, as ``talosctl gen config`` shapes it."""
        b, c = self.bundle, self.bundle["certs"]
        doc = {
            "version": "v1alpha1",
            "debug": False,
            "persist": True,
            "machine": {
                "type": "controlplane",
                "token": b["trustdinfo"]["token"],
                "ca": {"crt": c["os"]["crt"], "key": c["os"]["key"]},
                "certSANs": [node_ip],
                "kubelet": {"image": f"ghcr.io/siderolabs/kubelet:{k8s_version}", "defaultRuntimeSeccompProfileEnabled": True},
                "network": {},
                "install": {
                    "disk": "/dev/xvda",
                    "image": f"ghcr.io/siderolabs/installer:{talos_version}",
                    "wipe": False,
                },
                "time": {"servers": ["169.254.169.123"]},
                "features": {"rbac": True, "stableHostname": True, "apidCheckExtKeyUsage": True},
            },
            "cluster": {
                "id": b["cluster"]["id"],
                "secret": b["cluster"]["secret"],
                "controlPlane": {"endpoint": endpoint},
                "clusterName": self.cluster_name,
                "network": {
                    "dnsDomain": "cluster.local",
                    "podSubnets": ["10.244.0.0/16"],
                    "serviceSubnets": ["10.96.0.0/12"],
                },
                "token": b["secrets"]["bootstraptoken"],
                "secretboxEncryptionSecret": b["secrets"]["secretboxencryptionsecret"],
                "ca": {"crt": c["k8s"]["crt"], "key": c["k8s"]["key"]},
                "aggregatorCA": {"crt": c["k8saggregator"]["crt"], "key": c["k8saggregator"]["key"]},
                "serviceAccount": {"key": c["k8sserviceaccount"]["key"]},
                "apiServer": {"image": f"registry.k8s.io/kube-apiserver:{k8s_version}", "certSANs": [node_ip]},
                "etcd": {"ca": {"crt": c["etcd"]["crt"], "key": c["etcd"]["key"]}},
                "allowSchedulingOnControlPlanes": True,
            },
        }
        return yaml.safe_dump(doc, sort_keys=False)

    def check_machine_config(self, doc: object) -> str | None:
        """Why ``doc`` is not a control-plane config for this cluster, or None when it is."""
        if not isinstance(doc, dict):
            return "the config is not a YAML mapping"
        if doc.get("version") != "v1alpha1":
            return f"unknown config version {doc.get('version')!r}, expected v1alpha1"
        machine, cluster = doc.get("machine"), doc.get("cluster")
        if not isinstance(machine, dict) or not isinstance(cluster, dict):
            return "the config has no machine or cluster section"
        if machine.get("type") not in ("controlplane", "init"):
            return f"machine.type is {machine.get('type')!r}: this node is a control plane"
        if cluster.get("clusterName") != self.cluster_name:
            return f"cluster.clusterName is {cluster.get('clusterName')!r}, this node belongs to {self.cluster_name!r}"
        if (machine.get("ca") or {}).get("crt") != self.os_ca_crt:
            return "machine.ca does not match this cluster's secrets (a config generated from another secrets bundle)"
        if cluster.get("secretboxEncryptionSecret") != self.bundle["secrets"]["secretboxencryptionsecret"]:
            return "cluster.secretboxEncryptionSecret does not match this cluster's secrets"
        return None
