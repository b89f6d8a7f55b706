"""The recovery kit: everything a rebuild needs that is not in the bucket's snapshots, as one age-encrypted file.

``pulumi up`` writes it to ``s3://<bucket>/recovery/<clusterName>.kit.age`` (infra/recovery_kit.py); ``dr.rebuild``
reads it back with the operator's age identity. The plaintext is one JSON document:

* ``secretsBundle``: the Talos machine secrets in ``talosctl gen secrets`` YAML (talos v1.13.9
  cmd/talosctl/cmd/mgmt/gen/secrets.go marshals ``secrets.Bundle`` with go.yaml.in/yaml/v4: lower-cased field names,
  PEM blocks base64 under ``crt``/``key``; example: pkg/machinery/config/generate/secrets/testdata/secrets.yaml).
  terraform-provider-talos imports ``talos_machine_secrets`` from exactly such a file (its ImportState reads the
  path given as the import ID and yaml-unmarshals a ``secrets.Bundle``).
* ``config`` and ``secretConfig``: the stack's settings as the Pulumi CLI hands them to the program (every value a
  string, objects as JSON), full keys (``aws:region``, ``talos-dr:clusterName``, ...); secret ones apart.
* ``outputs``: the plain stack outputs DR needs, and ``dataVolumes``: each data volume's name and EBS volume id.

Pure: no I/O. ``seal``/``unseal`` encrypt with pyrage (age v1 binary format, readable by the ``age`` CLI).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyrage
import yaml
from pyrage import x25519

from dr.core import outputs as out
from dr.core import spelling

KIT_PREFIX = "recovery/"
KIT_SUFFIX = ".kit.age"
KIT_FORMAT = "talos-dr-recovery-kit"
KIT_VERSION = 1
# The secrets bundle's top-level sections, in the order talosctl writes them (secrets.Bundle's field order).
BUNDLE_SECTIONS = ("cluster", "secrets", "trustdinfo", "certs")
# Plain outputs a rebuild needs: where the snapshots are, the cluster's name, region and endpoint, and the age
# recipients new snapshots are encrypted to.
KIT_OUTPUTS = (out.BUCKET, out.SNAPSHOT_PREFIX, out.AWS_REGION, out.CLUSTER_NAME, out.CLUSTER_ENDPOINT,
               out.NODE_PUBLIC_IP, out.TALOS_VERSION, out.SNAPSHOT_AGE_RECIPIENTS)


class KitError(ValueError):
    """The kit cannot be used; the message says why and what to do."""


def kit_key(cluster_name: str) -> str:
    """``recovery/<clusterName>.kit.age``."""
    return f"{KIT_PREFIX}{cluster_name}{KIT_SUFFIX}"


def cluster_of_key(key: str) -> str | None:
    """The cluster name of a kit key, or None when ``key`` is not one."""
    if not (key.startswith(KIT_PREFIX) and key.endswith(KIT_SUFFIX)):
        return None
    name = key[len(KIT_PREFIX):-len(KIT_SUFFIX)]
    return name if name and "/" not in name else None


def bundle_yaml(bundle: Mapping[str, Any]) -> str:
    """The secrets bundle (talosctl layout: ``cluster``, ``secrets``, ``trustdinfo``, ``certs``) as talosctl's YAML,
    sections in talosctl's order, four-space indents as yaml/v4 writes them."""
    missing = [s for s in BUNDLE_SECTIONS if not bundle.get(s)]
    if missing:
        raise KitError(f"the Talos secrets bundle lacks {', '.join(missing)}; it is not a talosctl secrets bundle")
    ordered = {s: bundle[s] for s in BUNDLE_SECTIONS}
    return yaml.safe_dump(ordered, sort_keys=False, indent=4, default_flow_style=False)


def check_bundle_yaml(text: str) -> dict[str, Any]:
    """Parse a secrets bundle and check it has what ``talosctl gen config --with-secrets`` and the provider's import
    need: the cluster id and secret, the bootstrap token, the secretbox (or aescbc) key and every CA."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KitError(f"the kit's Talos secrets bundle is not YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise KitError("the kit's Talos secrets bundle is not a YAML mapping")
    need = {
        "cluster": ("id", "secret"),
        "secrets": ("bootstraptoken",),
        "trustdinfo": ("token",),
    }
    problems = [f"{s}.{k}" for s, keys in need.items() for k in keys if not (data.get(s) or {}).get(k)]
    secrets = data.get("secrets") or {}
    if not (secrets.get("secretboxencryptionsecret") or secrets.get("aescbcencryptionsecret")):
        problems.append("secrets.secretboxencryptionsecret")
    certs = data.get("certs") or {}
    for ca in ("etcd", "k8s", "k8saggregator", "os"):
        problems += [f"certs.{ca}.{k}" for k in ("crt", "key") if not (certs.get(ca) or {}).get(k)]
    if not (certs.get("k8sserviceaccount") or {}).get("key"):
        problems.append("certs.k8sserviceaccount.key")
    if problems:
        raise KitError(f"the kit's Talos secrets bundle lacks {', '.join(problems)}")
    return data


@dataclass(frozen=True)
class Kit:
    project: str
    stack: str
    cluster_name: str
    region: str
    bucket: str
    secrets_bundle: str = field(repr=False)
    config: Mapping[str, str] = field(default_factory=dict)
    secret_config: Mapping[str, str] = field(default_factory=dict, repr=False)
    outputs: Mapping[str, Any] = field(default_factory=dict)
    data_volumes: Sequence[Mapping[str, str]] = ()  # [{"name": ..., "id": "vol-..."}]
    written_at: str | None = None

    def to_document(self) -> dict[str, Any]:
        return {
            "format": KIT_FORMAT,
            "version": KIT_VERSION,
            "project": self.project,
            "stack": self.stack,
            "clusterName": self.cluster_name,
            "awsRegion": self.region,
            "bucket": self.bucket,
            "writtenAt": self.written_at,
            "config": dict(sorted(self.config.items())),
            "secretConfig": dict(sorted(self.secret_config.items())),
            "outputs": {k: self.outputs[k] for k in KIT_OUTPUTS if k in self.outputs},
            "dataVolumes": [dict(v) for v in self.data_volumes],
            "secretsBundle": self.secrets_bundle,
        }


def encode(kit: Kit) -> bytes:
    """The kit's plaintext: canonical JSON (sorted keys inside each section, UTF-8)."""
    return json.dumps(kit.to_document(), indent=2).encode()


def _strings(doc: Mapping[str, Any], name: str) -> dict[str, str]:
    value = doc.get(name) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise KitError(f"the kit's {name} is not a mapping of setting -> string value")
    return dict(value)


def decode(plaintext: bytes) -> Kit:
    """Parse and check a kit's plaintext; ``KitError`` names the first thing wrong."""
    try:
        doc = json.loads(plaintext)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KitError(f"the decrypted kit is not JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != KIT_FORMAT:
        raise KitError(f"the decrypted file is not a {KIT_FORMAT} document")
    if doc.get("version") != KIT_VERSION:
        raise KitError(f"kit version {doc.get('version')!r} is not one this `{spelling.command('rebuild')}` reads "
                       f"({KIT_VERSION}); "
                       "use the talos-dr checkout that wrote it")
    for key in ("project", "stack", "clusterName", "awsRegion", "bucket", "secretsBundle"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise KitError(f"the kit has no {key}")
    check_bundle_yaml(doc["secretsBundle"])
    volumes = doc.get("dataVolumes") or []
    if not isinstance(volumes, list) or not all(
            isinstance(v, dict) and isinstance(v.get("name"), str) and str(v.get("id", "")).startswith("vol-")
            for v in volumes):
        raise KitError("the kit's dataVolumes are not a list of {name, id: vol-...}")
    outputs = doc.get("outputs") or {}
    if not isinstance(outputs, dict):
        raise KitError("the kit's outputs are not a mapping")
    return Kit(project=doc["project"], stack=doc["stack"], cluster_name=doc["clusterName"], region=doc["awsRegion"],
               bucket=doc["bucket"], secrets_bundle=doc["secretsBundle"], config=_strings(doc, "config"),
               secret_config=_strings(doc, "secretConfig"), outputs=outputs,
               data_volumes=tuple({"name": v["name"], "id": v["id"]} for v in volumes),
               written_at=doc.get("writtenAt"))


def seal(kit: Kit, recipients: Sequence[x25519.Recipient]) -> bytes:
    """The kit encrypted to ``recipients`` (age v1, binary). A kit without recipients is refused: it holds every
    cluster key."""
    if not recipients:
        raise KitError("a recovery kit needs at least one age recipient (ageRecipients)")
    return pyrage.encrypt(encode(kit), list(recipients))


def unseal(ciphertext: bytes, identities: Sequence[x25519.Identity], *, where: str = "the recovery kit") -> Kit:
    """Decrypt and check a kit. A wrong identity, a damaged file and a file that is not a kit each get their own line."""
    if not ciphertext.startswith(b"age-encryption.org/v1\n"):
        raise KitError(f"{where} is not an age file (no age-encryption.org/v1 header)")
    try:
        plaintext = pyrage.decrypt(ciphertext, list(identities))
    except pyrage.DecryptError as exc:
        text = str(exc).lower()
        if "no matching keys" in text or "no identity" in text:
            raise KitError(f"{where} is not encrypted to this age identity: use the identity file whose public key "
                           "is in the stack's ageRecipients (`age-keygen -y FILE` prints it)") from exc
        raise KitError(f"{where} cannot be decrypted ({exc}); it may be damaged") from exc
    return decode(plaintext)
