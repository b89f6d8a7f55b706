"""EBS snapshots of the data volumes: the one tag that marks a data volume, the DLM schedule, and which snapshots are
newest. Pure: the program (infra/volume_snapshots.py) and ``dr.volumes`` share it.

Data Lifecycle Manager targets "resources that match the resource_types and are tagged with *any* of these tags"
(pulumi-aws v7 ``dlm.LifecyclePolicy`` ``policy_details.target_tags``; AWS DLM API ``PolicyDetails.TargetTags``), so
the policy must name one tag only the data volumes of this stack carry: ``talos-dr/data-volume = <stack>/<cluster>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

DATA_VOLUME_TAG = "talos-dr/data-volume"
# Added by the policy to every snapshot it takes (its schedule's tags_to_add): the DLM role may delete only these.
SNAPSHOT_BY_TAG = "talos-dr/snapshot-by"
SNAPSHOT_BY_DLM = "dlm"
MOUNT_TAG = "talos-dr/mount"  # /var/mnt/<name>, on every data volume (infra/node.py), copied to its snapshots
# DLM's CreateRule accepts these intervals in HOURS (AWS DLM API reference, CreateRule: "Interval ... Valid Values:
# 1 | 2 | 3 | 4 | 6 | 8 | 12 | 24").
DLM_INTERVAL_HOURS = (1, 2, 3, 4, 6, 8, 12, 24)
_RATE = re.compile(r"^rate\((\d+) (hour|hours|day)\)$")
_CRON = re.compile(r"^cron\([^()]+\)$")


def data_volume_tag_value(stack: str, cluster_name: str) -> str:
    """The value of ``talos-dr/data-volume`` on this stack's data volumes (and, copied by DLM, their snapshots)."""
    return f"{stack}/{cluster_name}"


def dlm_create_rule(schedule: str) -> dict[str, Any]:
    """A DLM ``create_rule`` from ``dataVolumeSnapshotSchedule``: ``rate(1 day)``, ``rate(N hours)`` with N one of DLM's
    intervals, or a DLM ``cron(...)`` expression (passed as is). ``ValueError`` says what is accepted."""
    s = schedule.strip()
    m = _RATE.fullmatch(s)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        hours = {"day": 24 if n == 1 else 0, "hour": 1 if n == 1 else 0, "hours": n if n > 1 else 0}[unit]
        if hours not in DLM_INTERVAL_HOURS:
            raise ValueError(f"{schedule!r}: Data Lifecycle Manager snapshots every 1, 2, 3, 4, 6, 8, 12 or 24 hours; "
                             "use 'rate(1 day)', 'rate(12 hours)', 'rate(1 hour)' or a 'cron(...)' expression")
        return {"interval": hours, "interval_unit": "HOURS"}
    if _CRON.fullmatch(s):
        return {"cron_expression": s}
    raise ValueError(f"{schedule!r} is not a schedule; use 'rate(1 day)', 'rate(N hours)' (N = 1, 2, 3, 4, 6, 8, 12) "
                     "or a DLM 'cron(0 3 * * ? *)' expression")


@dataclass(frozen=True)
class VolumeSnapshot:
    snapshot_id: str
    volume_id: str
    started: datetime
    state: str  # pending | completed | error | recoverable | recovering
    size_gib: int
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def volume_name(self) -> str:
        """The data volume's name (``/var/mnt/<name>``), from the copied mount tag; else the volume id."""
        mount = self.tags.get(MOUNT_TAG, "")
        return mount.rsplit("/", 1)[-1] if mount.startswith("/var/mnt/") else self.volume_id

    @property
    def name_tag(self) -> str:
        """The volume's ``Name`` tag, copied by DLM: which node's volume it is (``<cluster>-<name>`` on node 0,
        ``<cluster>-<name>-<i>`` on the others: infra/node.py ``label``); "" when absent."""
        return self.tags.get("Name", "")

    @property
    def by_dlm(self) -> bool:
        return self.tags.get(SNAPSHOT_BY_TAG) == SNAPSHOT_BY_DLM


def from_describe(item: Mapping[str, Any]) -> VolumeSnapshot:
    """One entry of EC2 ``DescribeSnapshots``' ``Snapshots`` list."""
    tags = {t["Key"]: t["Value"] for t in item.get("Tags") or []}
    return VolumeSnapshot(snapshot_id=item["SnapshotId"], volume_id=item.get("VolumeId", ""), started=item["StartTime"],
                          state=item.get("State", ""), size_gib=int(item.get("VolumeSize") or 0), tags=tags)


def newest_per_volume(snapshots: Iterable[VolumeSnapshot], per_volume: int = 1,
                      completed_only: bool = False) -> list[VolumeSnapshot]:
    """The ``per_volume`` newest snapshots of each data volume, volumes by name, newest first within each. With
    several control-plane nodes every node has a volume of each name: they are told apart by the ``Name`` tag (a
    volume that replaced an earlier one of the same node carries the same tag, so its history stays one)."""
    groups: dict[tuple[str, str], list[VolumeSnapshot]] = {}
    for s in snapshots:
        if completed_only and s.state != "completed":
            continue
        groups.setdefault((s.volume_name, s.name_tag), []).append(s)
    picked: list[VolumeSnapshot] = []
    for name in sorted(groups):
        picked += sorted(groups[name], key=lambda s: s.started, reverse=True)[:per_volume]
    return picked


def newest_completed(snapshots: Sequence[VolumeSnapshot], volume_name: str) -> VolumeSnapshot | None:
    """The newest completed snapshot of one data volume, or None."""
    done = [s for s in snapshots if s.volume_name == volume_name and s.state == "completed"]
    return max(done, key=lambda s: s.started) if done else None


def newest_completed_of(snapshots: Sequence[VolumeSnapshot], volume_id: str,
                        name_tag: str | None = None) -> VolumeSnapshot | None:
    """The newest completed snapshot of one node's data volume: taken of ``volume_id`` itself (EC2 records the source
    volume in each snapshot's ``VolumeId``), else, when it has none, carrying its ``Name`` tag (DLM copies the
    volume's tags: a volume that replaced an earlier one of the same node before its first snapshot). Every node's
    volume of one name shares the mount tag, so ``newest_completed`` cannot tell them apart."""
    done = [s for s in snapshots if s.state == "completed"]
    own = [s for s in done if s.volume_id == volume_id]
    if not own and name_tag:
        own = [s for s in done if s.tags.get("Name") == name_tag]
    return max(own, key=lambda s: s.started) if own else None
