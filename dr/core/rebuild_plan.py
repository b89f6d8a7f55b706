"""What ``dr.rebuild`` does, as a pure function of the kit and of what still exists: the settings to put back, the
resources to import (``pulumi import --file`` JSON), and what the operator must sort out before ``pulumi up``.

Import IDs, each the provider's own:

* ``aws:s3/bucket:Bucket``: the bucket's name (pulumi-aws v7 ``s3.Bucket`` docs, "Import":
  ``pulumi import aws:s3/bucket:Bucket example bucket-name``).
* ``aws:ebs/volume:Volume``: the volume id (pulumi-aws v7 ``ebs.Volume`` docs, "Import":
  ``pulumi import aws:ebs/volume:Volume id vol-049df61146c4d7901``).
* ``talos:machine/secrets:Secrets``: the path of a ``talosctl gen secrets`` YAML file (terraform-provider-talos
  docs/resources/machine_secrets.md, "Import": ``terraform import talos_machine_secrets.this <path-to-secrets.yaml>``;
  pkg/talos/talos_machine_secrets_resource.go ``ImportState`` reads the file named by the ID). The import records
  ``talos_version`` v1.3; the program's later, higher version is an in-place update, never a replacement (its plan
  modifier replaces only when the planned version is *lower* than the state's).

URNs: the engine names a resource ``urn:pulumi:<stack>::<project>::<parent types $-joined>$<type>::<name>``, leaving
out the root stack (pulumi/pulumi pkg/resource/deploy/deployment.go); ``pulumi import --file`` builds the same from
``parent`` and ``logicalName`` (pkg/cmd/pulumi/operations/import.go), and entries marked ``component`` are created as
the program's components. The names below are the program's (infra/stack.py, node.py, bucket.py, talos.py);
tests/infra/test_rebuild_urns.py checks them against the program run under mocks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dr.core import spelling
from dr.core.recovery_kit import Kit

BUCKET_TYPE = "aws:s3/bucket:Bucket"
VOLUME_TYPE = "aws:ebs/volume:Volume"
SECRETS_TYPE = "talos:machine/secrets:Secrets"
LOG_GROUP_TYPE = "aws:cloudwatch/logGroup:LogGroup"
# The provider plugin versions the program's SDKs pin (requirements.txt: pulumi-aws, pulumiverse-talos; a test keeps
# them equal). Each import names its version, so `pulumi import` does not pick whichever plugin happens to be
# installed and the next `up` does not switch default providers (the import
# file's per-resource "version", https://www.pulumi.com/docs/iac/cli/commands/pulumi_import/).
PROVIDER_VERSIONS = {"aws": "7.51.1", "talos": "0.8.1"}
ROOT_STACK_TYPE = "pulumi:pulumi:Stack"
PROVIDER_TYPE_PREFIX = "pulumi:providers:"
PROJECT_NS = "talos-dr:"
NODE_TYPE = "talos-dr:node:Node"
LOST_STATES = ("deleting", "deleted", "error")  # an EBS volume in one of these is as good as gone
# The per-node snapshot setting (infra/config.py): node index -> {data volume name: snapshot id}.
NODE_SNAPSHOTS_KEY = f"{PROJECT_NS}nodeDataVolumeSnapshots"


def components(cluster: str, nodes: int = 1) -> dict[str, tuple[str, str]]:
    """Import-file reference -> (component type, logical name), as infra/stack.py names them. Node 0 is ``node``,
    named after the cluster as in a one-node stack; node i of several is ``node-cp<i>``, named ``<cluster>-cp<i>``."""
    refs = {
        "node": (NODE_TYPE, cluster),
        "bucket": ("talos-dr:bucket:BackupBucket", f"{cluster}-etcd-backups"),
        "talos": ("talos-dr:talos:TalosCluster", cluster),
        "schedule": ("talos-dr:schedule:SnapshotSchedule", cluster),
    }
    return refs | {node_ref(i): (NODE_TYPE, node_name(cluster, i)) for i in range(1, nodes)}


def node_ref(index: int) -> str:
    """The import file's reference of node ``index``'s component."""
    return "node" if index == 0 else f"node-cp{index}"


def node_name(cluster: str, index: int) -> str:
    """Node ``index``'s component name (infra/stack.py): the cluster's for node 0, ``<cluster>-cp<i>`` else; also
    its name in the ``controlPlaneNodes`` output."""
    return cluster if index == 0 else f"{cluster}-cp{index}"


def volume_name_tag(cluster: str, index: int, volume: str) -> str:
    """A data volume's Name tag (infra/node.py NodeArgs.label), which DLM copies to its snapshots."""
    return f"{cluster}-{volume}" if index == 0 else f"{cluster}-{volume}-{index}"


def log_group_name(cluster: str) -> str:
    """The snapshot Lambda's log group (infra/schedule.py names it so; a fixed name survives the lost stack)."""
    return f"/talos-dr/{cluster}/snapshots"


def _scheduled(kit: Kit) -> bool:
    raw = kit.config.get(f"{PROJECT_NS}scheduledSnapshots", "true")
    return str(raw).strip().lower() not in ("false", "0", "no")


@dataclass(frozen=True)
class Import:
    ref: str  # unique name inside the import file
    type: str
    logical_name: str
    id: str
    parent: str  # a components() reference
    what: str  # for people

    def urn(self, stack: str, project: str, cluster: str) -> str:
        parent_type = NODE_TYPE if self.parent.startswith("node") else components(cluster)[self.parent][0]
        return f"urn:pulumi:{stack}::{project}::{parent_type}${self.type}::{self.logical_name}"


@dataclass(frozen=True)
class VolumeFacts:
    """What EC2 says about one data volume of the kit (None in ``volumes`` when it no longer exists)."""

    volume_id: str
    state: str  # creating | available | in-use | deleting | deleted | error
    attached_to: tuple[str, ...] = ()  # instance ids


@dataclass
class Plan:
    stack: str
    project: str
    cluster: str
    config: dict[str, tuple[str, bool]]  # full key -> (value, secret)
    imports: list[Import]
    skipped: list[str] = field(default_factory=list)  # imports already in the stack's state
    notes: list[str] = field(default_factory=list)  # what the operator must know or do before `pulumi up`
    blockers: list[str] = field(default_factory=list)  # what `pulumi up` would fail on, said plainly
    existing_components: dict[str, str] = field(default_factory=dict)  # ref -> URN already in the stack's state
    nodes: int = 1  # control-plane nodes of the kit's stack
    node_lines: list[str] = field(default_factory=list)  # per node: what happens to each of its data volumes

    @property
    def finish(self) -> list[str]:
        """The two commands that finish the job."""
        return [f"pulumi up --stack {self.stack}", f"{spelling.command('restore')} latest --stack {self.stack}"]


def _data_volumes(kit: Kit) -> list[dict[str, Any]]:
    raw = kit.config.get(f"{PROJECT_NS}dataVolumes") or kit.secret_config.get(f"{PROJECT_NS}dataVolumes") or "[]"
    try:
        items = json.loads(raw)
    except json.JSONDecodeError:
        return []
    return items if isinstance(items, list) else []


def _node_snapshots(kit: Kit) -> dict[str, dict[str, str]]:
    raw = kit.config.get(NODE_SNAPSHOTS_KEY) or kit.secret_config.get(NODE_SNAPSHOTS_KEY) or "{}"
    try:
        items = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    if not isinstance(items, dict):
        return {}
    return {str(k): dict(v) for k, v in items.items() if isinstance(v, dict)}


def stack_config(kit: Kit, bucket: str, restored_from: Mapping[Any, str]) -> tuple[dict[str, tuple[str, bool]], list[str]]:
    """The settings to set on the new stack, and what was changed from the kit's.

    ``bucketName`` is pinned to the bucket being imported (an auto-named bucket would otherwise be renamed by the
    program's name, and the imported one replaced). A lost volume gets the snapshot id of its newest snapshot
    (``restored_from``), so `pulumi up` creates it with its data: in a one-node kit (keys: volume names) as
    ``snapshotId`` of its ``dataVolumes`` entry, as always; in a kit of several nodes (keys: (node index, volume
    name)) in ``nodeDataVolumeSnapshots`` for that node only (``dataVolumes`` is every node's: a ``snapshotId`` there
    would replace the surviving nodes' volumes too).
    """
    config: dict[str, tuple[str, bool]] = {k: (v, False) for k, v in kit.config.items()}
    config |= {k: (v, True) for k, v in kit.secret_config.items()}
    changes: list[str] = []
    key = f"{PROJECT_NS}bucketName"
    if config.get(key, ("", False))[0] != bucket:
        changes.append(f"bucketName set to {bucket} (the bucket being imported)")
        config[key] = (bucket, False)
    if restored_from and (kit.per_node or node_count(kit) > 1):
        pinned = _node_snapshots(kit)
        for (index, name), snap in sorted(restored_from.items()):
            pinned.setdefault(str(index), {})[name] = snap
            changes.append(f"nodeDataVolumeSnapshots {index}.{name}: node {node_name(kit.cluster_name, index)}'s "
                           f"volume {name} created from snapshot {snap}")
        value = json.dumps({k: dict(sorted(v.items())) for k, v in sorted(pinned.items())})
        config[NODE_SNAPSHOTS_KEY] = (value, config.get(NODE_SNAPSHOTS_KEY, ("", False))[1])
    elif restored_from:
        key = f"{PROJECT_NS}dataVolumes"
        volumes = _data_volumes(kit)
        for item in volumes:
            if isinstance(item, dict) and item.get("name") in restored_from:
                item["snapshotId"] = restored_from[item["name"]]
                changes.append(f"dataVolumes {item['name']}: created from snapshot {item['snapshotId']}")
        config[key] = (json.dumps(volumes), config.get(key, ("", False))[1])
    return config, changes


def node_count(kit: Kit) -> int:
    """The kit's stack's control-plane nodes: its ``controlPlaneNodes`` setting, or as many as its volumes name."""
    try:
        configured = int(kit.config.get(f"{PROJECT_NS}controlPlaneNodes", "1"))
    except ValueError:
        configured = 1
    return max([configured, 1, *(int(v["node"]) + 1 for v in kit.data_volumes if "node" in v)])


def _volume_steps(kit: Kit, volumes: Mapping[str, VolumeFacts | None], newest_snapshots: Mapping[str, str]
                  ) -> tuple[list[Import], dict[Any, str], list[str], list[str], list[str]]:
    """Each data volume of the kit: import it, or (lost) have `pulumi up` create it from its newest snapshot.
    Returns (imports, restored_from, notes, blockers, per-node lines)."""
    cluster = kit.cluster_name
    imports: list[Import] = []
    restored_from: dict[Any, str] = {}
    notes: list[str] = []
    blockers: list[str] = []
    lines: list[str] = []
    for vol in kit.data_volumes:
        name, vid = vol["name"], vol["id"]
        index = int(vol.get("node", 0))
        whose = f"data volume {name}" if not kit.per_node else \
            f"data volume {name} of node {vol['nodeName']} ({vol['availabilityZone']})"
        facts = volumes.get(vid)
        if facts is None or facts.state in LOST_STATES:
            # Per node, only that volume's own snapshots (or its Name tag's) count: every node's volume of one
            # name shares the mount tag. One node: by name, as always.
            snap = newest_snapshots.get(vid) if kit.per_node else newest_snapshots.get(name)
            if snap:
                # A kit of several nodes that names node 0's volumes only (written before kits named every node's)
                # pins node 0's too: a snapshotId in dataVolumes would fill every node's volume from it.
                restored_from[(index, name) if kit.per_node or node_count(kit) > 1 else name] = snap
                notes.append(f"{whose} ({vid}) is gone: `pulumi up` creates it from its newest snapshot {snap}")
                lines.append(f"{whose}: {vid} lost; created from snapshot {snap}")
            else:
                notes.append(f"{whose} ({vid}) is gone and has no snapshot: `pulumi up` creates it empty")
                lines.append(f"{whose}: {vid} lost, no snapshot; created empty")
            continue
        ref = f"data-{name}" if index == 0 else f"data-{name}-cp{index}"
        imports.append(Import(ref, VOLUME_TYPE, f"{node_name(cluster, index)}-data-{name}", vid, node_ref(index),
                              f"{whose} ({vid})"))
        lines.append(f"{whose}: {vid} {facts.state}; imported")
        if facts.attached_to:
            blockers.append(f"{whose} ({vid}) is attached to {', '.join(facts.attached_to)}: an EBS volume "
                            "attaches to one instance, so `pulumi up` cannot attach it to the new node. If that is "
                            "the old node, stop or terminate it yourself (this command deletes nothing): "
                            f"`aws ec2 terminate-instances --instance-ids {' '.join(facts.attached_to)}`")
    return imports, restored_from, notes, blockers, lines


def plan(kit: Kit, *, bucket: str, secrets_file: str, volumes: Mapping[str, VolumeFacts | None],
         newest_snapshots: Mapping[str, str], stack: str | None = None,
         state_urns: Sequence[str] = (), log_group: bool | None = False) -> Plan:
    """The rebuild of ``kit``'s stack (or ``stack``) from what still exists.

    ``volumes``: the kit's volume ids -> what EC2 says (None: gone); ``newest_snapshots``: the newest completed
    snapshot of each lost volume, by volume name in a one-node kit, by volume id in a kit of several nodes;
    ``state_urns``: what the stack already holds (a re-run after an interruption); ``log_group``: whether the old
    stack's snapshot log group still exists (None: not known).
    """
    stack = stack or kit.stack
    cluster = kit.cluster_name
    nodes = node_count(kit)
    imports = [Import("backup-bucket", BUCKET_TYPE, f"{cluster}-etcd-backups", bucket, "bucket",
                      f"the backup bucket s3://{bucket}"),
               Import("talos-secrets", SECRETS_TYPE, f"{cluster}-secrets", secrets_file, "talos",
                      "the Talos machine secrets (the cluster PKI and the secretbox key) from the kit")]
    more, restored_from, notes, blockers, lines = _volume_steps(kit, volumes, newest_snapshots)
    imports += more
    if nodes > 1 and kit.data_volumes and not kit.per_node:
        notes.append(f"the kit names node 0's data volumes only (written before kits recorded every node's): the "
                     f"other {nodes - 1} nodes' volumes are not imported, and `pulumi up` creates them empty; if they "
                     "still exist, find them with `aws ec2 describe-volumes --filters Name=tag:talos-dr/cluster,"
                     f"Values={cluster}` and import each before the `up` (`pulumi import {VOLUME_TYPE} "
                     f"{cluster}-cp1-data-<volume> vol-...`), or set nodeDataVolumeSnapshots")
    if _scheduled(kit):
        name = log_group_name(cluster)
        if log_group:
            # Its name is fixed: left in place, `pulumi up` would fail creating it ("already exists").
            # Imported, the new stack takes it over with its logs.
            imports.append(Import("snapshot-logs", LOG_GROUP_TYPE, f"{cluster}-logs", name, "schedule",
                                  f"the snapshot Lambda's log group {name}"))
        elif log_group is None:
            notes.append(f"could not ask CloudWatch Logs whether {name} still exists; if it does, `pulumi up` fails "
                         f"creating it: import it (`pulumi import {LOG_GROUP_TYPE} {cluster}-logs {name}`) or delete "
                         f"it (`aws logs delete-log-group --log-group-name {name}`) first")
    config, changes = stack_config(kit, bucket, restored_from)
    notes = changes + notes

    project = kit.project
    parts = components(cluster, nodes)
    ours = {i.urn(stack, project, cluster) for i in imports}
    ours |= {f"urn:pulumi:{stack}::{project}::{t}::{n}" for t, n in parts.values()}
    foreign = sorted(u for u in state_urns if u not in ours and not _bookkeeping(u))
    if foreign:
        blockers.append(f"stack {stack} already holds {len(foreign)} other resource(s) (first: {foreign[0]}): "
                        f"`{spelling.command('rebuild')}` only fills a new stack; pass --stack NEW-NAME")
    done = set(state_urns)
    skipped = [i.what for i in imports if i.urn(stack, project, cluster) in done]
    todo = [i for i in imports if i.urn(stack, project, cluster) not in done]
    existing = {ref: urn for ref, (t, n) in parts.items()
                if (urn := f"urn:pulumi:{stack}::{project}::{t}::{n}") in done}
    return Plan(stack=stack, project=project, cluster=cluster, config=config, imports=todo, skipped=skipped,
                notes=notes, blockers=blockers, existing_components=existing, nodes=nodes, node_lines=lines)


def _bookkeeping(urn: str) -> bool:
    typ = urn.split("::")[2] if urn.count("::") >= 3 else ""
    return typ == ROOT_STACK_TYPE or typ.startswith(PROVIDER_TYPE_PREFIX)


def import_file(p: Plan) -> dict[str, Any]:
    """The ``pulumi import --file`` document: the parents as components, then each resource to import."""
    needed = {i.parent for i in p.imports}
    # A component an interrupted earlier run already created is named by its URN (nameTable), not created again.
    name_table = {ref: urn for ref, urn in p.existing_components.items() if ref in needed}
    resources: list[dict[str, Any]] = [
        {"type": typ, "name": ref, "logicalName": logical, "component": True}
        for ref, (typ, logical) in components(p.cluster, p.nodes).items() if ref in needed and ref not in name_table
    ]
    resources += [{"type": i.type, "name": i.ref, "logicalName": i.logical_name, "id": i.id, "parent": i.parent,
                   "version": PROVIDER_VERSIONS[i.type.split(":", 1)[0]]}
                  for i in p.imports]
    return {"nameTable": name_table, "resources": resources} if name_table else {"resources": resources}
