"""Stack configuration: read once, validated once, frozen.

``validate_config`` is a pure function over a plain mapping (config key -> value, as strings the way Pulumi
stores them or as native Python values), so every rule is table-testable without a Pulumi engine.
``load_config`` is the only function that touches ``pulumi.Config``.

Every key here is documented in the README's configuration table (a test keeps the two in step).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, TypeVar

from dr.core.cluster_nodes import ALLOWED_COUNTS
from dr.core.outputs import PROJECT_NAME

# The AWS region is read from the aws provider's own namespace so the default provider and this program
# can never disagree about where the stack lives.
AWS_REGION_KEY = "aws:region"

DEFAULTS: dict[str, Any] = {
    "clusterName": "talos-dr",
    "availabilityZone": None,  # "<region>a"
    "instanceType": "t3.medium",
    # 1 or 3 control-plane nodes, one per availability zone (etcd needs a majority: see _control_plane_nodes).
    "controlPlaneNodes": 1,
    "talosVersion": "v1.13.9",
    # Unset: the Kubernetes version pulumiverse-talos's embedded Talos machinery defaults to (not the node's Talos
    # release: get_configuration's talos_version only picks the config format).
    "kubernetesVersion": None,
    "adminCidrs": None,  # required
    "allowWorldAccess": False,
    "rootVolumeSize": 20,
    "dataVolumes": [],
    "dataVolumeSnapshotSchedule": "rate(1 day)",  # DLM snapshots of every data volume
    "dataVolumeSnapshotRetain": 7,  # DLM keeps this many snapshots per data volume
    # Per node: node index ("0", "1", "2") -> {data volume name: EBS snapshot id} to create that node's volume from,
    # overriding dataVolumes' snapshotId for that node only (a lost volume of one node; `talos-dr rebuild` sets it).
    "nodeDataVolumeSnapshots": {},
    "vpcCidr": "10.0.0.0/16",
    "subnetCidr": "10.0.1.0/24",
    # Unset: the subnet's 10th address, pinned only when the instance is created (an existing instance keeps its
    # address; infra/node.py). Set: that address, and changing it replaces the instance.
    "nodePrivateIp": None,
    "bucketName": None,  # Pulumi auto-names it: "<clusterName>-etcd-backups-<random>"
    # Lifecycle expiry per retention tier (dr.core.tiers), days after upload; each longer than the one before.
    "snapshotRetentionHourlyDays": 2,
    "snapshotRetentionDailyDays": 14,
    "snapshotRetentionWeeklyDays": 56,
    "snapshotRetentionMonthlyDays": 365,
    "snapshotObjectLockDays": 0,  # 0: no S3 Object Lock; N: governance-mode default retention of N days
    "snapshotReaders": [],  # IAM role/user ARNs that may read snapshots, besides the deployer and the Lambda
    # IAM role/user ARNs that may write snapshots (`talos-dr backup --save-to-s3`), besides the snapshot Lambda.
    "snapshotWriters": [],
    # One IAM role/user ARN that may delete snapshots and kits (break glass, `talos-dr prune --s3`); unset: nobody,
    # only the lifecycle rules delete (docs/VAULT.md).
    "snapshotDeleter": None,
    # IAM role/user ARNs that may also run `pulumi up`/`refresh`/`destroy` (write the kit and credential, change the
    # bucket's rules), besides whoever runs it now (docs/VAULT.md).
    "deployers": [],
    "argocdChartVersion": "9.1.4",
    "kubernetesSecrets": {},
    "snapshotSchedule": "rate(1 hour)",
    "scheduledSnapshots": True,
    "snapshotLambdaWheelDir": None,  # pip download into ~/.cache/talos-dr/lambda on first use
    "ageRecipients": [],  # age X25519 public keys snapshots are encrypted to; empty: compressed, not encrypted
    "alertEmails": [],  # addresses the backup alarms mail (infra/alarms.py); the alertTopicArn output takes others
}

# Keys in the project namespace, in README order; plus aws:region.
PROJECT_KEYS: tuple[str, ...] = tuple(DEFAULTS)
ALL_KEYS: tuple[str, ...] = (AWS_REGION_KEY, *PROJECT_KEYS)
# Keys this program once read, and what replaced them: a stack that still sets one is told, not silently ignored.
RETIRED_KEYS: dict[str, str] = {
    "snapshotRetentionDays": "was replaced by snapshotRetentionHourlyDays, -DailyDays, -WeeklyDays and -MonthlyDays "
                             "(one age for every snapshot let the bucket empty itself when backups stopped); "
                             "remove it with `pulumi config rm snapshotRetentionDays` and set those if the defaults "
                             "(2/14/56/365) do not suit",
}
# Tier -> config key of its expiry days.
TIER_DAYS_KEYS: dict[str, str] = {
    "hourly": "snapshotRetentionHourlyDays",
    "daily": "snapshotRetentionDailyDays",
    "weekly": "snapshotRetentionWeeklyDays",
    "monthly": "snapshotRetentionMonthlyDays",
}

MIN_ROOT_VOLUME_GIB = 20  # the Talos AMI's root snapshot size
# A block this broad (or a list adding up to one) is "the internet", whatever its spelling: 0.0.0.0/1 plus
# 128.0.0.0/1 is 0.0.0.0/0 (security review L6). An IPv4 /8 is 16.7 M addresses, an IPv6 /16 a sixteenth of 2000::/3.
WORLD_PREFIXLEN = {4: 8, 6: 16}
_WORLD_ADDRESSES = {4: 2 ** (32 - WORLD_PREFIXLEN[4]), 6: 2 ** (128 - WORLD_PREFIXLEN[6])}
VOLUME_TYPES = frozenset({"gp3", "gp2", "io1", "io2", "st1", "sc1"})
# Instance families Talos documents for AWS; T2 is excluded by the Talos docs (unreliable clock, no Nitro).
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_CLUSTER_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
_TALOS_VERSION = re.compile(r"^v\d+\.\d+\.\d+$")
_KUBE_VERSION = re.compile(r"^v?\d+\.\d+\.\d+$")
_CHART_VERSION = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$")
_VOLUME_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
# AWS recommends /dev/sd[f-p] for EBS data volumes; xvd[f-p] is the equivalent Xen-style spelling.
_DEVICE = re.compile(r"^/dev/(sd|xvd)[f-p]$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SCHEDULE = re.compile(
    r"^(rate\((1 (minute|hour|day)|([2-9]|[1-9]\d+) (minutes|hours|days))\)|cron\([^()]+\))$"
)
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_K8S_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
_SNAPSHOT_ID = re.compile(r"^snap-[0-9a-f]{8}([0-9a-f]{9})?$")

_T = TypeVar("_T")


class ConfigValidationError(ValueError):
    """One or more stack settings are invalid. ``problems`` lists (key, message) pairs; each message says the fix."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = "\n".join(f"  - {key}: {msg}" for key, msg in problems)
        super().__init__(f"invalid stack configuration ({len(problems)} problem(s)):\n{lines}")

    @property
    def keys(self) -> list[str]:
        return [key for key, _ in self.problems]


@dataclass(frozen=True)
class DataVolume:
    """An EBS data volume, attached at ``device`` and mounted by Talos at ``/var/mnt/<name>``."""

    name: str
    size: int
    type: str = "gp3"
    device: str = "/dev/sdf"
    snapshot_id: str | None = None  # create the volume from this EBS snapshot (a lost volume's newest snapshot)

    @property
    def mount_path(self) -> str:
        return f"/var/mnt/{self.name}"


@dataclass(frozen=True)
class KubernetesSecret:
    """A Kubernetes Secret the stack creates. ``data`` holds plain values only until addons wraps them as secrets."""

    namespace: str
    name: str
    data: Mapping[str, str] = field(repr=False)


@dataclass(frozen=True)
class StackConfig:
    cluster_name: str
    aws_region: str
    availability_zone: str
    instance_type: str
    talos_version: str
    kubernetes_version: str | None
    admin_cidrs: tuple[str, ...]
    allow_world_access: bool
    root_volume_size: int
    data_volumes: tuple[DataVolume, ...]
    vpc_cidr: str
    subnet_cidr: str
    bucket_name: str | None
    snapshot_tier_days: Mapping[str, int]  # retention tier (dr.core.tiers) -> lifecycle expiry days
    argocd_chart_version: str
    kubernetes_secrets: tuple[KubernetesSecret, ...]
    snapshot_schedule: str
    scheduled_snapshots: bool
    snapshot_lambda_wheel_dir: str | None
    age_recipients: tuple[str, ...] = ()
    snapshot_object_lock_days: int = 0  # 0: Object Lock off
    snapshot_readers: tuple[str, ...] = ()  # principal ARNs allowed to read objects, besides deployer and Lambda
    snapshot_writers: tuple[str, ...] = ()  # principal ARNs allowed to write snapshots, besides the Lambda
    snapshot_deleter: str | None = None  # the break-glass deleter, or None: only lifecycle deletes
    deployers: tuple[str, ...] = ()  # principal ARNs that count as deployers, besides whoever runs `pulumi up`
    data_volume_snapshot_schedule: str = "rate(1 day)"
    data_volume_snapshot_retain: int = 7
    alert_emails: tuple[str, ...] = ()  # email subscriptions to the backup alarms' topic
    # The node's fixed private IP, and whether the stack's config set it (infra/node.py: what an unset key means).
    node_private_ip: str = "10.0.1.10"
    node_private_ip_set: bool = False
    control_plane_nodes: int = 1  # 1 or 3 (ALLOWED_CONTROL_PLANE_NODES)
    # nodeDataVolumeSnapshots: node index -> {volume name: snapshot id}, for that node's volumes only.
    node_data_volume_snapshots: Mapping[int, Mapping[str, str]] = field(default_factory=dict)

    def node_data_volumes(self, index: int) -> tuple[DataVolume, ...]:
        """Node ``index``'s data volumes: ``dataVolumes``, with ``nodeDataVolumeSnapshots``' snapshot ids for this
        node in place of ``snapshotId`` (a lost volume of one node comes back without touching the others')."""
        pinned = self.node_data_volume_snapshots.get(index, {})
        return tuple(replace(v, snapshot_id=pinned[v.name]) if v.name in pinned else v
                     for v in self.data_volumes)

    @property
    def zones(self) -> tuple[str, ...]:
        """Each node's availability zone, node 0 first (node_zones)."""
        return node_zones(self.availability_zone, self.control_plane_nodes)

    @property
    def subnet_cidrs(self) -> tuple[str, ...]:
        """Each node's public subnet, node 0's being ``subnetCidr`` (node_subnets)."""
        return tuple(str(n) for n in node_subnets(ipaddress.IPv4Network(self.subnet_cidr), self.control_plane_nodes))

    @property
    def node_private_ips(self) -> tuple[str, ...]:
        """Each node's fixed private IP: node 0's is ``nodePrivateIp``, every other the 10th address of its subnet."""
        rest = (default_node_private_ip(ipaddress.IPv4Network(c)) for c in self.subnet_cidrs[1:])
        return (self.node_private_ip, *rest)


class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, key: str, msg: str) -> None:
        self.items.append((key, msg))


def _set_hint(key: str, example: str) -> str:
    return f"set it with `pulumi config set {key} {example}`"


def _as_int(raw: Any, key: str, lo: int, hi: int, unit: str, p: _Problems, why: str = "") -> int | None:
    value: int | None = None
    if isinstance(raw, bool):
        value = None
    elif isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and re.fullmatch(r"\d+", raw.strip()):
        value = int(raw)
    if value is None:
        p.add(key, f"{raw!r} is not a whole number of {unit}; {_set_hint(key, str(lo if lo > 1 else 30))}")
        return None
    if not lo <= value <= hi:
        p.add(key, f"{value} is out of range; use {lo} to {hi} {unit}{why}")
        return None
    return value


def _as_bool(raw: Any, key: str, p: _Problems) -> bool | None:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    p.add(key, f"{raw!r} is not a boolean; use true or false")
    return None


def _as_json(raw: Any, key: str, kind: type, p: _Problems) -> Any:
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            p.add(key, f"is not valid JSON ({exc.msg}); set items with `pulumi config set --path '{key}[0]' ...`")
            return None
    if not isinstance(value, kind):
        want = "a list" if kind is list else "an object"
        p.add(key, f"must be {want}, got {type(value).__name__}; set items with `pulumi config set --path`")
        return None
    return value


def _as_str(raw: Any, key: str, pattern: re.Pattern[str], fix: str, p: _Problems) -> str | None:
    if not isinstance(raw, str) or not pattern.fullmatch(raw):
        p.add(key, f"{raw!r} is invalid; {fix}")
        return None
    return raw


def _as_network(raw: Any, key: str, p: _Problems) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(str(raw), strict=True)
    except ValueError as exc:
        p.add(key, f"{raw!r} is not a CIDR block ({exc}); write it like 203.0.113.7/32")
        return None


def _data_volumes(raw: Any, p: _Problems) -> tuple[DataVolume, ...]:
    key = "dataVolumes"
    items = _as_json(raw, key, list, p)
    if items is None:
        return ()
    volumes: list[DataVolume] = []
    names: set[str] = set()
    devices: set[str] = set()
    for i, item in enumerate(items):
        k = f"{key}[{i}]"
        if not isinstance(item, dict):
            p.add(k, "must be an object {name, size, type, device}")
            continue
        unknown = set(item) - {"name", "size", "type", "device", "snapshotId"}
        if unknown:
            p.add(k, f"unknown field(s) {sorted(unknown)}; allowed: name, size, type, device, snapshotId")
        snapshot_id = item.get("snapshotId")
        if snapshot_id is not None and not (isinstance(snapshot_id, str) and _SNAPSHOT_ID.fullmatch(snapshot_id)):
            p.add(f"{k}.snapshotId", f"{snapshot_id!r} is not an EBS snapshot id; use one like snap-0123456789abcdef0 "
                                     "(`python -m dr.volumes` lists the newest)")
            snapshot_id = None
        name = _as_str(item.get("name"), f"{k}.name", _VOLUME_NAME,
                       "use lower-case letters, digits and '-' (it becomes /var/mnt/<name>)", p)
        size = _as_int(item.get("size"), f"{k}.size", 1, 16384, "GiB", p)
        vtype = item.get("type", "gp3")
        if vtype not in VOLUME_TYPES:
            p.add(f"{k}.type", f"{vtype!r} is not an EBS volume type; use one of {sorted(VOLUME_TYPES)} (gp3 advised)")
        device = _as_str(item.get("device"), f"{k}.device", _DEVICE,
                         "use an AWS data-volume device name from /dev/sdf to /dev/sdp", p)
        if name in names:
            p.add(f"{k}.name", f"duplicate volume name {name!r}; give each volume its own name")
        if device in devices:
            p.add(f"{k}.device", f"device {device!r} is used twice; give each volume its own device")
        if name and size and device and vtype in VOLUME_TYPES:
            names.add(name)
            devices.add(device)
            volumes.append(DataVolume(name=name, size=size, type=vtype, device=device, snapshot_id=snapshot_id))
    return tuple(volumes)


def _node_data_volume_snapshots(raw: Any, nodes: int | None, volumes: tuple[DataVolume, ...],
                                 p: _Problems) -> dict[int, dict[str, str]]:
    """``nodeDataVolumeSnapshots``: ``{"<node index>": {"<dataVolumes name>": "snap-..."}}``."""
    key = "nodeDataVolumeSnapshots"
    obj = _as_json(raw, key, dict, p)
    if not obj:
        return {}
    names = {v.name for v in volumes}
    count = nodes or 1
    pinned: dict[int, dict[str, str]] = {}
    for node, snaps in obj.items():
        k = f"{key}.{node}"
        if not (isinstance(node, str) and node.isdigit() and int(node) < count):
            p.add(k, f"{node!r} is not a node index; use 0 to {count - 1} (controlPlaneNodes is {count}; node 0 is "
                     "the bootstrap node, `pulumi stack output controlPlaneNodes` lists them in order)")
            continue
        if not isinstance(snaps, dict):
            p.add(k, 'must be an object {"<data volume name>": "snap-..."}')
            continue
        for vol, snap in snaps.items():
            if vol not in names:
                p.add(f"{k}.{vol}", f"no data volume named {vol!r} in dataVolumes"
                                    f" ({', '.join(sorted(names)) or 'none'})")
            elif not (isinstance(snap, str) and _SNAPSHOT_ID.fullmatch(snap)):
                p.add(f"{k}.{vol}", f"{snap!r} is not an EBS snapshot id; use one like snap-0123456789abcdef0 "
                                    "(`talos-dr volumes` lists the newest)")
            else:
                pinned.setdefault(int(node), {})[vol] = snap
    return pinned


def _kubernetes_secrets(raw: Any, is_secret: bool, p: _Problems) -> tuple[KubernetesSecret, ...]:
    key = "kubernetesSecrets"
    obj = _as_json(raw, key, dict, p)
    if not obj:
        return ()
    if not is_secret:
        p.add(key, "holds secret values but is stored in plain text; "
                   "remove it and set it again with `pulumi config set --secret --path ...`")
    secrets: list[KubernetesSecret] = []
    for ref, data in obj.items():
        k = f"{key}.{ref}"
        ns, _, name = str(ref).partition("/")
        if not (name and _K8S_NAME.fullmatch(ns) and _K8S_NAME.fullmatch(name)):
            p.add(k, "name each secret '<namespace>/<name>' (lower-case DNS labels), e.g. 'argocd/repo-creds'")
            continue
        if not isinstance(data, dict) or not data:
            p.add(k, "must be a non-empty object of key -> string value")
            continue
        bad = [d for d, v in data.items() if not _K8S_KEY.fullmatch(str(d)) or not isinstance(v, str)]
        if bad:
            p.add(k, f"keys {sorted(map(str, bad))} need names of [-._a-zA-Z0-9] and string values")
            continue
        secrets.append(KubernetesSecret(namespace=ns, name=name, data=MappingProxyType(dict(data))))
    return tuple(secrets)


_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _required(value: _T | None, key: str) -> _T:
    # Every check that yields None has recorded a problem, and problems raise before the StackConfig is built.
    if value is None:
        raise AssertionError(f"{key} failed validation without a recorded problem")
    return value


def _unknown_keys(raw: Mapping[str, Any], p: _Problems) -> None:
    for key in sorted(set(raw) - set(ALL_KEYS)):
        near = [k for k in PROJECT_KEYS if k.lower() == key.lower() or k.lower().startswith(key.lower()[:5])]
        hint = f"did you mean {near[0]!r}?" if near else f"known keys: {', '.join(ALL_KEYS)}"
        p.add(key, f"unknown setting; {hint} (remove it with `pulumi config rm {key}`)")


def _region(raw: Any, p: _Problems) -> str | None:
    if raw is None:
        p.add(AWS_REGION_KEY, "is required; " + _set_hint(AWS_REGION_KEY, "us-east-1"))
        return None
    return _as_str(raw, AWS_REGION_KEY, _REGION, "use an AWS region name such as us-east-1", p)


def _zone(az: Any, region: str | None, p: _Problems) -> Any:
    if az is None and region:
        return f"{region}a"
    if az is not None and region and not (isinstance(az, str) and re.fullmatch(re.escape(region) + r"[a-z]", az)):
        p.add("availabilityZone", f"{az!r} is not a zone of {region}; use e.g. {region}a")
    return az


def _instance_type(raw: Any, p: _Problems) -> str | None:
    instance_type = _as_str(raw, "instanceType", _INSTANCE_TYPE, "use an EC2 instance type such as t3.medium", p)
    if instance_type and instance_type.startswith("t2."):
        p.add("instanceType", f"{instance_type} is a T2 type, which Talos docs advise against; use t3.medium or larger")
        return None
    return instance_type


def _kube_version(raw: Any, p: _Problems) -> str | None:
    if raw is None:
        return None
    version = _as_str(raw, "kubernetesVersion", _KUBE_VERSION,
                      "use a Kubernetes version such as 1.34.1, or unset it for the Talos provider's default", p)
    return version.lstrip("v") if version else None


def _admin_cidrs(raw: Any, allow_world: bool | None, p: _Problems) -> tuple[str, ...]:
    if raw is None:
        p.add("adminCidrs", "is required (who may reach the Talos and Kubernetes APIs); "
                            "set it with `pulumi config set --path 'adminCidrs[0]' 203.0.113.7/32` (your address)")
        return ()
    admin_cidrs: tuple[str, ...] = ()
    cidrs = _as_json(raw, "adminCidrs", list, p)
    if cidrs is not None and not cidrs:
        p.add("adminCidrs", "is empty, so nobody could reach the node; "
                            "add your address with `pulumi config set --path 'adminCidrs[0]' 203.0.113.7/32`")
    nets: list[_Network] = []
    for i, c in enumerate(cidrs or []):
        net = _as_network(c, f"adminCidrs[{i}]", p)
        if net is None:
            continue
        if net.prefixlen < WORLD_PREFIXLEN[net.version] and allow_world is not True:
            p.add(f"adminCidrs[{i}]", f"{net} is broader than a /{WORLD_PREFIXLEN[net.version]}: it opens the Talos and "
                                      "Kubernetes APIs to the whole internet; use your own address/32, or set "
                                      "allowWorldAccess to true if you mean it")
            continue
        nets.append(net)
        admin_cidrs += (str(net),)
    for version in (4, 6):
        same: list[Any] = [n for n in nets if n.version == version]  # collapse_addresses wants one IP version
        total: int = sum(n.num_addresses for n in ipaddress.collapse_addresses(same))
        if total > _WORLD_ADDRESSES[version] and allow_world is not True:
            p.add("adminCidrs", f"the IPv{version} blocks add up to {total:,} addresses, more than a "
                                f"/{WORLD_PREFIXLEN[version]}: that is the internet in pieces; list your own "
                                "addresses, or set allowWorldAccess to true if you mean it")
    return admin_cidrs


def _networks(raw_vpc: Any, raw_subnet: Any, p: _Problems) -> tuple[_Network | None, _Network | None]:
    vpc = _as_network(raw_vpc, "vpcCidr", p)
    subnet = _as_network(raw_subnet, "subnetCidr", p)
    if vpc is not None and (vpc.version != 4 or not 16 <= vpc.prefixlen <= 28):
        p.add("vpcCidr", f"{vpc} must be an IPv4 block from /16 to /28 (an AWS VPC limit)")
        vpc = None
    if vpc is not None and subnet is not None and (subnet.version != 4 or not subnet.subnet_of(vpc)):
        p.add("subnetCidr", f"{subnet} is not inside vpcCidr {vpc}; pick a block within it, e.g. {next(vpc.subnets(new_prefix=max(vpc.prefixlen, 24)))}")
    return vpc, subnet


# AWS reserves the first four and the last address of every subnet (the network address, the VPC router, the
# Amazon DNS server, one for future use, and the broadcast address): Amazon VPC User Guide, "Subnet CIDR blocks".
SUBNET_RESERVED_FIRST = 4
NODE_HOST_INDEX = 10  # the default node address: the subnet's 10th (10.0.1.10 in 10.0.1.0/24)


def default_node_private_ip(subnet: _Network) -> str:
    return str(subnet.network_address + NODE_HOST_INDEX)


def _node_private_ip(raw: Any, subnet: _Network | None, p: _Problems) -> str | None:
    """The configured node address: an IPv4 address of ``subnetCidr`` that AWS does not reserve."""
    if subnet is None:
        return None
    if raw is None:
        if subnet.num_addresses < NODE_HOST_INDEX + 2:
            p.add("nodePrivateIp", f"subnetCidr {subnet} is too small for the default node address; set one, e.g. "
                                   f"`pulumi config set nodePrivateIp {subnet.network_address + SUBNET_RESERVED_FIRST}`")
            return None
        return default_node_private_ip(subnet)
    try:
        addr = ipaddress.ip_address(str(raw).strip())
    except ValueError:
        p.add("nodePrivateIp", f"{raw!r} is not an IP address; {_set_hint('nodePrivateIp', default_node_private_ip(subnet))}")
        return None
    first, last = subnet.network_address + SUBNET_RESERVED_FIRST, subnet.broadcast_address - 1
    if addr.version != 4 or addr not in subnet:
        p.add("nodePrivateIp", f"{addr} is not in subnetCidr {subnet}; pick one from {first} to {last}")
        return None
    if not int(first) <= int(addr) <= int(last):
        p.add("nodePrivateIp", f"{addr} is reserved by AWS (the first four and the last address of a subnet); pick "
                               f"one from {first} to {last}")
        return None
    return str(addr)


ALLOWED_CONTROL_PLANE_NODES = ALLOWED_COUNTS  # (1, 3): what the DR commands (dr.core.cluster_nodes) accept too
_CONTROL_PLANE_NODES_WHY = (
    "use 1 or 3 (`pulumi config set controlPlaneNodes 3`): etcd commits a write only when a majority of its members "
    "agree, so 2 nodes tolerate no loss (a majority of 2 is 2, and either node down stops the cluster) while 3 "
    "tolerate one; more than 3 is not supported by this project yet"
)


def _control_plane_nodes(raw: Any, p: _Problems) -> int | None:
    """1 (the default) or 3; anything else is refused with the reason, before anything is created."""
    value: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and re.fullmatch(r"\s*\d+\s*", raw):
        value = int(raw)
    if value is None:
        p.add("controlPlaneNodes", f"{raw!r} is not a whole number of nodes; {_CONTROL_PLANE_NODES_WHY}")
        return None
    if value not in ALLOWED_CONTROL_PLANE_NODES:
        p.add("controlPlaneNodes", f"{value} is not supported; {_CONTROL_PLANE_NODES_WHY}")
        return None
    return value


def node_zones(first: str, count: int) -> tuple[str, ...]:
    """Each node's zone: node 0's (``availabilityZone``), then the zones lettered after it (us-east-1a, -1b, -1c).

    Derived from the config alone, never from a lookup, so a zone AWS adds later cannot move (and so replace) a node.
    """
    head, letter = first[:-1], first[-1]
    return tuple(head + chr(ord(letter) + i) for i in range(count))


def node_subnets(first: _Network, count: int) -> tuple[_Network, ...]:
    """Each node's public subnet: node 0's is ``subnetCidr`` (unchanged), node i's the block of the same size i places
    after it (10.0.1.0/24, 10.0.2.0/24, 10.0.3.0/24)."""
    size = first.num_addresses
    return tuple(ipaddress.ip_network((int(first.network_address) + i * size, first.prefixlen)) for i in range(count))


def _ha_layout(count: int | None, zone: Any, vpc: _Network | None, subnet: _Network | None, p: _Problems) -> None:
    """With more than one node: a zone letter for each, and a subnet for each inside the VPC that can hold the
    node's address (the subnet's 10th)."""
    if not count or count == 1:
        return
    if isinstance(zone, str) and zone and not all("a" <= z[-1] <= "z" for z in node_zones(zone, count)):
        p.add("availabilityZone", f"{zone} leaves no {count - 1} zone letters after it for the other nodes; "
                                  f"use an earlier zone such as {zone[:-1]}a")
    if vpc is None or subnet is None or subnet.version != 4:
        return
    for i, net in enumerate(node_subnets(subnet, count)[1:], start=1):
        if not net.subnet_of(vpc):  # type: ignore[arg-type]
            p.add("subnetCidr", f"node {i}'s subnet would be {net}, outside vpcCidr {vpc}: the nodes' subnets follow "
                                f"subnetCidr, so pick a lower subnetCidr or a larger vpcCidr")
            return
    if subnet.num_addresses < NODE_HOST_INDEX + 2:
        p.add("subnetCidr", f"{subnet} is too small for the other nodes' addresses (each the 10th of its subnet); "
                            "use a /28 or larger")


def _bucket(raw: Any, p: _Problems) -> str | None:
    if raw is None:
        return None
    bucket = _as_str(raw, "bucketName", _BUCKET,
                     "use 3-63 lower-case letters, digits, '.' and '-' (S3 naming rules), or unset it", p)
    if bucket and (".." in bucket or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", bucket)):
        p.add("bucketName", f"{bucket!r} breaks S3 naming rules (no '..', not an IP address)")
        return None
    return bucket


def _wheel_dir(raw: Any, p: _Problems) -> str | None:
    # Only the shape is checked here (validation does no I/O); a folder that lacks the wheels is reported by
    # the package build, with the `pip download` command that fills it.
    if raw is not None and (not isinstance(raw, str) or not raw.strip()):
        p.add("snapshotLambdaWheelDir", f"{raw!r} is not a folder path; "
                                        f"{_set_hint('snapshotLambdaWheelDir', './lambda-wheels')}, or unset it")
        return None
    return raw


def _age_recipients(raw: Any, p: _Problems) -> tuple[str, ...]:
    """age X25519 public keys (``age1...``), each parsed by pyrage (bech32 and curve point checked), no duplicates.
    Only public keys belong in the stack: an identity (``AGE-SECRET-KEY-1...``) is refused with its own message."""
    from dr.core.age_keys import AgeKeyError, parse_recipient

    value = _as_json(raw, "ageRecipients", list, p)
    if value is None:
        return ()
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            p.add("ageRecipients", f"item {i} is {item!r}, not an age public key string such as 'age1...'")
            continue
        try:
            out.append(parse_recipient(item, where=f"ageRecipients item {i}"))
        except AgeKeyError as exc:
            p.add("ageRecipients", str(exc))
    if len(set(out)) != len(out):
        p.add("ageRecipients", "lists the same public key twice; list each recipient once")
    return tuple(out)


def _volume_schedule(raw: Any, p: _Problems) -> str | None:
    from dr.core.volume_snapshots import dlm_create_rule

    try:
        dlm_create_rule(str(raw))
    except ValueError as exc:
        p.add("dataVolumeSnapshotSchedule", str(exc))
        return None
    return str(raw).strip()


def _tier_days(get: Any, p: _Problems) -> dict[str, int]:
    """Expiry days per retention tier, each 1 to 3650, each tier kept longer than the one before it."""
    from dr.core.tiers import TIERS

    days: dict[str, int] = {}
    for tier in TIERS:
        key = TIER_DAYS_KEYS[tier]
        value = _as_int(get(key), key, 1, 3650, "days", p)
        if value is not None:
            days[tier] = value
    if len(days) == len(TIERS):
        for shorter, longer in zip(TIERS, TIERS[1:], strict=False):
            if days[longer] <= days[shorter]:
                p.add(TIER_DAYS_KEYS[longer], f"{days[longer]} days is not longer than {TIER_DAYS_KEYS[shorter]} "
                                              f"({days[shorter]}); each tier must outlive the one before it, e.g. 2/14/56/365")
    return days


_PRINCIPAL_ARN = re.compile(r"^arn:aws(-[a-z]+)*:iam::\d{12}:((role|user)/[\w+=,.@/-]+|root)$")


def _readers(raw: Any, p: _Problems, key: str = "snapshotReaders") -> tuple[str, ...]:
    """IAM principal ARNs (roles, users, an account root) the bucket policy names under ``key``."""
    value = _as_json(raw, key, list, p)
    out: list[str] = []
    for i, item in enumerate(value or []):
        problem = _principal_problem(item)
        if problem:
            p.add(key, f"item {i} {problem}")
        else:
            out.append(item)
    return tuple(dict.fromkeys(out))


_EMAIL = re.compile(r"^[^@\s\"'<>,;]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
MAX_ALERT_EMAILS = 10


def _alert_emails(raw: Any, p: _Problems) -> tuple[str, ...]:
    """Email addresses subscribed to the alarms' SNS topic (each gets a confirmation mail from AWS first)."""
    value = _as_json(raw, "alertEmails", list, p)
    out: list[str] = []
    for i, item in enumerate(value or []):
        if not (isinstance(item, str) and len(item) <= 254 and _EMAIL.fullmatch(item.strip())):
            p.add("alertEmails", f"item {i} {item!r} is not an email address such as ops@example.com")
        else:
            out.append(item.strip())
    if len({e.lower() for e in out}) != len(out):
        p.add("alertEmails", "lists the same address twice; list each once")
    if len(out) > MAX_ALERT_EMAILS:
        p.add("alertEmails", f"lists {len(out)} addresses; at most {MAX_ALERT_EMAILS} (subscribe a mailing list, "
                             "or anything else to the alertTopicArn output)")
    return tuple(out)
def _principal_problem(item: Any) -> str | None:
    if isinstance(item, str) and ":assumed-role/" in item:
        return (f"{item!r} is a session; name its role instead "
                "(arn:aws:iam::<account>:role/<name>: the policy matches aws:PrincipalArn, the role)")
    if not (isinstance(item, str) and _PRINCIPAL_ARN.fullmatch(item)):
        return f"{item!r} is not an IAM role or user ARN such as arn:aws:iam::123456789012:role/dr-operator"
    return None


def _deleter(raw: Any, p: _Problems) -> str | None:
    if raw is None or raw == "":
        return None
    problem = _principal_problem(raw)
    if problem:
        p.add("snapshotDeleter", problem)
        return None
    return str(raw)


def validate_config(raw: Mapping[str, Any], secret_keys: frozenset[str] = frozenset()) -> StackConfig:
    """Validate plain config values (``aws:region`` plus the project keys, unprefixed) into a ``StackConfig``.

    ``secret_keys`` names the keys stored as secrets (unprefixed). Raises ``ConfigValidationError`` listing every
    problem, each naming its key and the fix.
    """
    p = _Problems()
    retired = {k: why for k, why in RETIRED_KEYS.items() if k in raw}
    for key, why in retired.items():
        p.add(key, why)
    _unknown_keys({k: v for k, v in raw.items() if k not in retired}, p)

    def get(key: str) -> Any:
        value = raw.get(key)
        return DEFAULTS.get(key) if value is None else value

    region = _region(raw.get(AWS_REGION_KEY), p)
    cluster_name = _as_str(get("clusterName"), "clusterName", _CLUSTER_NAME,
                           "use 1-40 lower-case letters, digits and '-' (it names AWS resources)", p)
    az = _zone(get("availabilityZone"), region, p)
    instance_type = _instance_type(get("instanceType"), p)
    talos_version = _as_str(get("talosVersion"), "talosVersion", _TALOS_VERSION,
                            "use a Talos release tag such as v1.13.9 (the AMI is looked up by it)", p)
    kube_version = _kube_version(get("kubernetesVersion"), p)
    allow_world = _as_bool(get("allowWorldAccess"), "allowWorldAccess", p)
    admin_cidrs = _admin_cidrs(raw.get("adminCidrs"), allow_world, p)
    # Sidero registers the AMI with a 20 GiB root snapshot (talos v1.13.9 hack/cloud-image-uploader/aws.go,
    # `VolumeSize: 20`), and EC2 refuses a root volume smaller than its snapshot.
    root_size = _as_int(get("rootVolumeSize"), "rootVolumeSize", MIN_ROOT_VOLUME_GIB, 16384, "GiB", p,
                        f" (the Talos AMI's root snapshot is {MIN_ROOT_VOLUME_GIB} GiB, and EC2 refuses a smaller root volume)")
    data_volumes = _data_volumes(get("dataVolumes"), p)
    vpc, subnet = _networks(get("vpcCidr"), get("subnetCidr"), p)
    node_ip = _node_private_ip(get("nodePrivateIp"), subnet, p)
    nodes = _control_plane_nodes(get("controlPlaneNodes"), p)
    _ha_layout(nodes, az, vpc, subnet, p)
    node_snapshots = _node_data_volume_snapshots(get("nodeDataVolumeSnapshots"), nodes, data_volumes, p)
    bucket = _bucket(get("bucketName"), p)
    tier_days = _tier_days(get, p)
    lock_days = _as_int(get("snapshotObjectLockDays"), "snapshotObjectLockDays", 0, 3650, "days", p,
                        " (0 turns Object Lock off)")
    readers = _readers(get("snapshotReaders"), p)
    writers = _readers(get("snapshotWriters"), p, "snapshotWriters")
    deleter = _deleter(get("snapshotDeleter"), p)
    deployers = _readers(get("deployers"), p, "deployers")
    chart = _as_str(get("argocdChartVersion"), "argocdChartVersion", _CHART_VERSION,
                    "pin an exact argo-cd chart version such as 9.1.4", p)
    kube_secrets = _kubernetes_secrets(get("kubernetesSecrets"), "kubernetesSecrets" in secret_keys, p)
    schedule = _as_str(get("snapshotSchedule"), "snapshotSchedule", _SCHEDULE,
                       "use an EventBridge expression such as 'rate(1 hour)', 'rate(30 minutes)' or 'cron(0 * * * ? *)'", p)
    scheduled = _as_bool(get("scheduledSnapshots"), "scheduledSnapshots", p)
    wheel_dir = _wheel_dir(get("snapshotLambdaWheelDir"), p)
    age_recipients = _age_recipients(get("ageRecipients"), p)
    alert_emails = _alert_emails(get("alertEmails"), p)
    volume_schedule = _volume_schedule(get("dataVolumeSnapshotSchedule"), p)
    volume_retain = _as_int(get("dataVolumeSnapshotRetain"), "dataVolumeSnapshotRetain", 1, 1000, "snapshots", p,
                            " (Data Lifecycle Manager keeps at most 1000 per schedule)")

    if p.items:
        raise ConfigValidationError(p.items)
    return StackConfig(
        cluster_name=_required(cluster_name, "clusterName"),
        aws_region=_required(region, AWS_REGION_KEY),
        availability_zone=az,
        instance_type=_required(instance_type, "instanceType"),
        talos_version=_required(talos_version, "talosVersion"),
        kubernetes_version=kube_version,
        admin_cidrs=admin_cidrs,
        allow_world_access=bool(allow_world),
        root_volume_size=_required(root_size, "rootVolumeSize"),
        data_volumes=data_volumes,
        vpc_cidr=str(vpc),
        subnet_cidr=str(subnet),
        bucket_name=bucket,
        snapshot_tier_days=MappingProxyType(tier_days),
        argocd_chart_version=_required(chart, "argocdChartVersion"),
        kubernetes_secrets=kube_secrets,
        snapshot_schedule=_required(schedule, "snapshotSchedule"),
        scheduled_snapshots=bool(scheduled),
        snapshot_lambda_wheel_dir=wheel_dir,
        age_recipients=age_recipients,
        snapshot_object_lock_days=_required(lock_days, "snapshotObjectLockDays"),
        snapshot_readers=readers,
        snapshot_writers=writers,
        snapshot_deleter=deleter,
        deployers=deployers,
        data_volume_snapshot_schedule=_required(volume_schedule, "dataVolumeSnapshotSchedule"),
        data_volume_snapshot_retain=_required(volume_retain, "dataVolumeSnapshotRetain"),
        alert_emails=alert_emails,
        node_private_ip=_required(node_ip, "nodePrivateIp"),
        node_private_ip_set=get("nodePrivateIp") is not None,
        control_plane_nodes=_required(nodes, "controlPlaneNodes"),
        node_data_volume_snapshots=MappingProxyType(node_snapshots),
    )


def load_config() -> StackConfig:
    """Read the stack's configuration from Pulumi and validate it (raises ``ConfigValidationError``)."""
    import pulumi
    from pulumi.runtime.config import is_config_secret

    prefix = f"{PROJECT_NAME}:"
    raw: dict[str, Any] = {}
    region = pulumi.Config("aws").get("region")
    if region is not None:
        raw[AWS_REGION_KEY] = region
    # Every key set in the project namespace, including typos (so they are reported, not ignored).
    present = {k[len(prefix):] for k in _all_config_keys() if k.startswith(prefix)}
    cfg = pulumi.Config()
    for key in present | set(PROJECT_KEYS):
        value = cfg.get(key)
        if value is not None:
            raw[key] = value
    secret_keys = frozenset(k for k in raw if is_config_secret(f"{prefix}{k}"))
    return validate_config(raw, secret_keys)


def _all_config_keys() -> list[str]:
    from pulumi.runtime.config import CONFIG, get_config_env

    return [*CONFIG.get(), *get_config_env()]
