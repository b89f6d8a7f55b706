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
  A stack of more than one control-plane node (``controlPlaneNodes: 3``) writes version 2: each entry also names its
  node (``node``: the index, 0 the bootstrap node; ``nodeName``, as in the ``controlPlaneNodes`` output;
  ``availabilityZone``). A one-node stack still writes version 1, which older checkouts read; both are read here.

Pure: no I/O. ``seal``/``unseal`` encrypt with pyrage (age v1 binary format, readable by the ``age`` CLI).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyrage
import yaml
from pyrage import x25519

from dr.core import outputs as out
from dr.core import spelling

KIT_PREFIX = "recovery/"
# Object metadata (x-amz-meta-written-by) naming the principal whose `pulumi up` wrote a kit version. S3 itself does
# not record who wrote an object (only CloudTrail data events do); this is what the writer said, and the bucket policy
# lets only the deployers write under recovery/ (docs/VAULT.md).
WRITTEN_BY = "written-by"
KIT_SUFFIX = ".kit.age"
KIT_FORMAT = "talos-dr-recovery-kit"
KIT_VERSION = 1
# Version 2: dataVolumes entries carry their node (several control-plane nodes, each with its own volumes). Only a
# stack of several nodes writes it, so an older checkout refuses such a kit instead of importing three volumes under
# one name; a one-node kit stays version 1.
KIT_VERSION_NODES = 2
KIT_VERSIONS = (KIT_VERSION, KIT_VERSION_NODES)
VOLUME_NODE_FIELDS = ("node", "nodeName", "availabilityZone")
# The secrets bundle's top-level sections, in the order talosctl writes them (secrets.Bundle's field order).
BUNDLE_SECTIONS = ("cluster", "secrets", "trustdinfo", "certs")
# Plain outputs a rebuild needs: where the snapshots are, the cluster's name, region and endpoint, and the age
# recipients new snapshots are encrypted to.
KIT_OUTPUTS = (out.BUCKET, out.SNAPSHOT_PREFIX, out.AWS_REGION, out.CLUSTER_NAME, out.CLUSTER_ENDPOINT,
               out.NODE_PUBLIC_IP, out.TALOS_VERSION, out.SNAPSHOT_AGE_RECIPIENTS)


# The settings a kit may carry, and so the only ones `talos-dr rebuild` sets on a new stack (a kit is
# encrypted to public recipients, so decrypting proves nothing about its author: whoever can write to the bucket could
# otherwise set anything). The project's keys are
# infra.config.PROJECT_KEYS (dr may not import infra; tests/core/test_recovery_kit_trust.py keeps the two equal); the
# AWS provider's are its configuration variables (pulumi-aws 7.51.1 pulumi_aws/config/vars.py).
PROJECT_NS = "talos-dr:"
PROJECT_SETTINGS = (
    "clusterName", "availabilityZone", "instanceType", "talosVersion", "kubernetesVersion", "adminCidrs",
    "allowWorldAccess", "rootVolumeSize", "dataVolumes", "dataVolumeSnapshotSchedule", "dataVolumeSnapshotRetain",
    "vpcCidr", "subnetCidr", "bucketName", "snapshotRetentionHourlyDays", "snapshotRetentionDailyDays",
    "snapshotRetentionWeeklyDays", "snapshotRetentionMonthlyDays", "snapshotObjectLockDays", "snapshotReaders",
    "snapshotWriters", "snapshotDeleter", "deployers", "argocdChartVersion", "kubernetesSecrets", "snapshotSchedule",
    "scheduledSnapshots", "snapshotLambdaWheelDir", "ageRecipients", "alertEmails", "nodePrivateIp",
    "controlPlaneNodes", "nodeDataVolumeSnapshots",
)
AWS_SETTINGS = (
    "accessKey", "allowedAccountIds", "assumeRoleWithWebIdentity", "assumeRoles", "customCaBundle", "defaultTags",
    "ec2MetadataServiceEndpoint", "ec2MetadataServiceEndpointMode", "endpoints", "forbiddenAccountIds", "httpProxy",
    "httpsProxy", "ignoreTags", "insecure", "maxRetries", "noProxy", "profile", "region", "retryMode", "s3UsEast1RegionalEndpoint",
    "s3UsePathStyle", "secretKey", "sharedConfigFiles", "sharedCredentialsFiles", "skipCredentialsValidation",
    "skipMetadataApiCheck", "skipRegionValidation", "skipRequestingAccountId", "stsRegion", "tagPolicyCompliance",
    "token", "tokenBucketRateLimiterCapacity", "useDualstackEndpoint", "useFipsEndpoint", "userAgents",
)
KNOWN_SETTINGS = frozenset({*(PROJECT_NS + k for k in PROJECT_SETTINGS), *("aws:" + k for k in AWS_SETTINGS)})


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
    # [{"name": ..., "id": "vol-..."}], plus "node", "nodeName", "availabilityZone" in a kit of several nodes
    data_volumes: Sequence[Mapping[str, Any]] = ()
    written_at: str | None = None

    @property
    def per_node(self) -> bool:
        """Whether the data volumes name their nodes (a kit of a stack with several control-plane nodes)."""
        return any("node" in v for v in self.data_volumes)

    def to_document(self) -> dict[str, Any]:
        return {
            "format": KIT_FORMAT,
            "version": KIT_VERSION_NODES if self.per_node else KIT_VERSION,
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
    if doc.get("version") not in KIT_VERSIONS:
        raise KitError(f"kit version {doc.get('version')!r} is not one this `{spelling.command('rebuild')}` reads "
                       f"({', '.join(map(str, KIT_VERSIONS))}); "
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
    entries = _volume_entries(volumes, per_node=doc["version"] == KIT_VERSION_NODES)
    outputs = doc.get("outputs") or {}
    if not isinstance(outputs, dict):
        raise KitError("the kit's outputs are not a mapping")
    return Kit(project=doc["project"], stack=doc["stack"], cluster_name=doc["clusterName"], region=doc["awsRegion"],
               bucket=doc["bucket"], secrets_bundle=doc["secretsBundle"], config=_strings(doc, "config"),
               secret_config=_strings(doc, "secretConfig"), outputs=outputs,
               data_volumes=entries,
               written_at=doc.get("writtenAt"))


def _volume_entries(volumes: list[dict[str, Any]], *, per_node: bool) -> tuple[dict[str, Any], ...]:
    """The dataVolumes entries: {name, id} in a version 1 kit (anything else in them ignored, as before); in a
    version 2 kit each also names its node, and no node holds two volumes of one name."""
    if not per_node:
        return tuple({"name": v["name"], "id": v["id"]} for v in volumes)
    entries = []
    for v in volumes:
        node, node_name, zone = (v.get(k) for k in VOLUME_NODE_FIELDS)
        if not (isinstance(node, int) and not isinstance(node, bool) and node >= 0 and isinstance(node_name, str)
                and node_name and isinstance(zone, str)):
            raise KitError(f"the kit's data volume {v['name']} ({v['id']}) does not say which node it belongs to "
                           "(node, nodeName, availabilityZone)")
        entries.append({"name": v["name"], "id": v["id"], "node": node, "nodeName": node_name,
                        "availabilityZone": zone})
    pairs = [(e["node"], e["name"]) for e in entries]
    if len(set(pairs)) != len(pairs):
        raise KitError("the kit's dataVolumes list a volume twice for one node")
    return tuple(entries)


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


def unknown_settings(kit: Kit) -> list[str]:
    """The kit's settings this talos-dr does not know (plain and secret), sorted: a kit carrying any is not imported."""
    return sorted(k for k in {*kit.config, *kit.secret_config} if k not in KNOWN_SETTINGS)


@dataclass(frozen=True)
class KitVersion:
    """One stored version of a kit object, as S3 lists it. ``written_by`` is the object's ``written-by`` metadata:
    what the writer said (infra/recovery_kit.py records the deployer's ARN); S3 does not record who wrote an object
    (CloudTrail data events do). ``checksum_sha256`` is the SHA-256 S3 recorded at upload (base64), which nobody can
    change afterwards."""

    version_id: str
    last_modified: datetime
    size: int
    latest: bool
    written_by: str | None = None
    checksum_sha256: str | None = None


def history_lines(versions: Sequence[KitVersion], chosen: str | None = None) -> list[str]:
    """One line per version, newest first, the chosen one marked."""
    out = []
    for v in versions:
        mark = "*" if v.version_id == chosen else " "
        who = v.written_by or "not recorded"
        out.append(f"{mark} {v.last_modified.strftime('%Y-%m-%dT%H:%M:%SZ')}  version {v.version_id}  {v.size} bytes  "
                   f"written by {who}{'  (current)' if v.latest else ''}")
    return out


def unlike_the_others(versions: Sequence[KitVersion]) -> str | None:
    """Why the newest version deserves a second look, or None: written by a principal none of the older versions
    name (a kit is rewritten by every `pulumi up`, so its history normally shows the same deployers)."""
    if len(versions) < 2:
        return None
    newest, older = versions[0], versions[1:]
    writers = {v.written_by for v in older if v.written_by}
    if newest.written_by and writers and newest.written_by not in writers:
        return (f"the newest version was written by {newest.written_by}, and none of the {len(older)} older ones "
                f"were (they name {', '.join(sorted(writers))})")
    if not newest.written_by and writers:
        return "the newest version does not say who wrote it, and the older ones do"
    return None


def newer_than_seen(version: KitVersion, seen: Mapping[str, Any] | None, history: Sequence[KitVersion] = ()) -> bool:
    """True when this machine last saw another, older version of the kit (``seen``: the local record). ``history``
    (newest first, as S3 lists it) orders versions stored within the same second; without the seen version in it,
    the stored times decide, a tie counting as newer."""
    if not seen or seen.get("versionId") == version.version_id:
        return False
    ids = [v.version_id for v in history]
    if seen.get("versionId") in ids and version.version_id in ids:
        return ids.index(version.version_id) < ids.index(str(seen.get("versionId")))
    try:
        when = datetime.fromisoformat(str(seen.get("lastModified")))
    except ValueError:
        return True
    return version.last_modified >= when
