"""What the node says about its etcd: DB size against the quota, and active alarms. Pure data, no I/O.

Read through Talos's ``EtcdStatus`` and ``EtcdAlarmList`` (``dr.adapters.talosapi``), reported by the scheduled
Lambda as metrics (``dr.core.metrics``) and judged by ``talos-dr status`` (``dr.core.status``).

The quota is not part of ``EtcdStatus`` (machine.proto v1.13.9 ``EtcdMemberStatus`` has no quota field; machined
copies etcd's StatusResponse without it, v1alpha1_server.go ``EtcdStatus``), so it comes from the stack: etcd's
``--quota-backend-bytes``, 2 GiB unless the machine config's ``cluster.etcd.extraArgs`` sets it
(etcd v3.6.12 server/storage/quota.go ``DefaultQuotaBytes``). When the DB reaches the quota, etcd raises a
``NOSPACE`` alarm and takes only reads and deletes until it is defragmented and the alarm disarmed.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_QUOTA_BYTES = 2 * 1024**3  # etcd's default --quota-backend-bytes (server/storage/quota.go, v3.6.12)
QUOTA_WARN_PERCENT = 80.0  # the alarm and `talos-dr status` call a DB this full a problem


@dataclass(frozen=True)
class EtcdHealth:
    """One member's etcd as the node reports it."""

    db_size: int  # bytes the DB file takes (what the quota limits)
    db_size_in_use: int  # bytes in use (db_size minus what a defragment would free)
    quota: int  # --quota-backend-bytes (the stack's setting; not reported by the node)
    alarms: tuple[str, ...] = ()  # active alarms: "NOSPACE", "CORRUPT" (NONE is never listed)
    member_id: int = 0
    errors: tuple[str, ...] = ()  # etcd's own status errors, e.g. "NOSPACE" reasons
    # Raft, as the member sees it (EtcdMemberStatus leader, raft_term, raft_index, raft_applied_index, is_learner):
    # what dr.core.member_choice judges a member by. leader 0: the member knows no leader.
    leader: int = 0
    raft_term: int = 0
    raft_index: int = 0
    raft_applied_index: int = 0
    is_learner: bool = False
    # Alarms by member (EtcdAlarmList's member_alarms): (member id, alarm name); ``alarms`` is their names
    member_alarms: tuple[tuple[int, str], ...] = ()

    @property
    def percent(self) -> float:
        """The DB size as a share of the quota, in percent."""
        return 100.0 * self.db_size / self.quota if self.quota > 0 else 0.0
