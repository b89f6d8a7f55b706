from datetime import UTC, datetime, timedelta, timezone

import pytest

from dr.core.naming import is_safety_snapshot, parse_snapshot_name, snapshot_name


def test_round_trip():
    ts = datetime(2026, 11, 24, 3, 4, 5, tzinfo=UTC)
    name = snapshot_name(ts)
    assert name == "etcd-snapshot-20261124T030405Z.db"
    assert parse_snapshot_name(name) == ts
    assert parse_snapshot_name("snapshots/" + name) == ts


def test_other_timezones_become_utc():
    ts = datetime(2026, 1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    assert snapshot_name(ts) == "etcd-snapshot-20251231T230000Z.db"


def test_names_sort_by_time():
    base = datetime(2026, 1, 1, tzinfo=UTC)
    times = [base + timedelta(seconds=s) for s in (86400 * 40, 5, 3600, 0)]
    assert sorted(snapshot_name(t) for t in times) == [snapshot_name(t) for t in sorted(times)]


@pytest.mark.parametrize("bad", ["etcd-snapshot-20261124T030405.db", "etcd-snapshot-20261324T030405Z.db",
                                 "etcd-snapshot-20261124T030405Z.db.part", "x.db", "", "snapshots/"])
def test_non_names_are_rejected(bad):
    assert parse_snapshot_name(bad) is None


def test_safety_names():
    ts = datetime(2026, 11, 24, tzinfo=UTC)
    n = snapshot_name(ts, safety=True)
    assert n.startswith("pre-restore-") and is_safety_snapshot(n)
    assert parse_snapshot_name(n) == ts


# --- every scheme: dr's layered names, pre-restore safety names, siderolabs/talos-backup's -----------------------
# talos-backup (pkg/talos/talos.go) names a snapshot fmt.Sprintf("%s-%s.snap", clusterName,
# time.Now().Format(time.RFC3339)), then appends ".zst" (pkg/compression) and ".age" (pkg/encryption), and pushes it
# to "<prefix>/<name>" (pkg/s3). Go's time.RFC3339 is "2006-01-02T15:04:05Z07:00": "Z" in UTC, else the local
# numeric offset "+hh:mm"/"-hh:mm", never fractional seconds.

from dr.core import naming  # noqa: E402
from dr.core.naming import SnapshotName, format_name, parse, stored_name  # noqa: E402

_TS = datetime(2026, 11, 24, 3, 4, 5, tzinfo=UTC)
_LAYERS = [(False, False, "plain", ""), (True, False, "zstd", ".zst"), (False, True, "age", ".age"),
           (True, True, "zstd+age", ".zst.age")]


def test_format_names():
    assert [format_name(c, e) for c, e, _, _ in _LAYERS] == ["plain", "zstd", "age", "zstd+age"]


@pytest.mark.parametrize(("compressed", "encrypted", "fmt", "suffix"), _LAYERS)
def test_dr_names_with_layers(compressed, encrypted, fmt, suffix):
    plain = snapshot_name(_TS)
    name = stored_name(plain, compressed=compressed, encrypted=encrypted)
    assert name == plain + suffix
    p = parse(name)
    assert p == SnapshotName(name=name, plain=plain, taken_at=_TS, scheme=naming.DR, compressed=compressed,
                             encrypted=encrypted, safety=False, cluster=None)
    assert p.format == fmt
    assert p.taken_at.utcoffset() == timedelta(0)
    # a key under a prefix is read by its last component
    assert parse("snapshots/sub/" + name) == p


@pytest.mark.parametrize(("compressed", "encrypted", "fmt", "suffix"), _LAYERS)
def test_safety_names_with_layers(compressed, encrypted, fmt, suffix):
    plain = snapshot_name(_TS, safety=True)
    p = parse(stored_name(plain, compressed=compressed, encrypted=encrypted))
    assert p is not None and p.safety and p.scheme == naming.DR
    assert (p.plain, p.taken_at, p.format) == (plain, _TS, fmt)


@pytest.mark.parametrize(("stamp", "utc"), [
    ("2026-11-24T03:04:05Z", datetime(2026, 11, 24, 3, 4, 5, tzinfo=UTC)),
    ("2026-11-24T05:04:05+02:00", datetime(2026, 11, 24, 3, 4, 5, tzinfo=UTC)),
    ("2026-11-23T22:04:05-05:00", datetime(2026, 11, 24, 3, 4, 5, tzinfo=UTC)),
    ("2026-11-24T08:34:05+05:30", datetime(2026, 11, 24, 3, 4, 5, tzinfo=UTC)),
    ("2027-01-01T00:30:00+01:00", datetime(2026, 12, 31, 23, 30, 0, tzinfo=UTC)),  # a year boundary
])
@pytest.mark.parametrize(("compressed", "encrypted", "fmt", "suffix"), _LAYERS)
def test_talos_backup_names_take_the_time_from_the_name(stamp, utc, compressed, encrypted, fmt, suffix):
    plain = f"homelab-{stamp}.snap"
    name = stored_name(plain, compressed=compressed, encrypted=encrypted)
    assert name == plain + suffix  # the order talos-backup appends them in: .zst then .age
    p = parse(f"homelab/{name}")  # talos-backup's key: <prefix (default: the cluster name)>/<name>
    assert p is not None, name
    assert p.scheme == naming.TALOS_BACKUP
    assert p.name == name and p.plain == plain
    assert p.cluster == "homelab"
    assert p.taken_at == utc and p.taken_at.utcoffset() == timedelta(0)
    assert (p.compressed, p.encrypted, p.format, p.safety) == (compressed, encrypted, fmt, False)


@pytest.mark.parametrize(("cluster", "stamp"), [
    ("prod-eu-1", "2026-11-24T03:04:05Z"),
    ("talos-2026", "2026-11-24T03:04:05+01:00"),
    ("c", "2026-11-24T03:04:05Z"),
    ("my.cluster_x", "2026-11-24T03:04:05-07:00"),
    # a cluster name that itself ends in something date-like: the timestamp is the last one before .snap
    ("old-2020-01-01T00:00:00Z", "2026-11-24T03:04:05Z"),
])
def test_talos_backup_cluster_names_with_hyphens_and_digits(cluster, stamp):
    p = parse(f"{cluster}-{stamp}.snap.zst.age")
    assert p is not None
    assert p.cluster == cluster
    assert p.taken_at == datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)


def test_talos_backup_names_sort_by_time_through_parse_across_offsets():
    names = ["c-2026-11-24T05:00:00+02:00.snap",  # 03:00Z
             "c-2026-11-24T02:30:00Z.snap",  # 02:30Z
             "c-2026-11-23T23:00:00-05:00.snap"]  # 04:00Z
    assert [n for n in sorted(names, key=lambda n: parse(n).taken_at)] == [names[1], names[0], names[2]]


@pytest.mark.parametrize("bad", [
    # dr names with the layers in the wrong order, twice, or with something after them
    "etcd-snapshot-20261124T030405Z.db.age.zst",
    "etcd-snapshot-20261124T030405Z.db.zst.zst",
    "etcd-snapshot-20261124T030405Z.db.zst.age.part",
    "etcd-snapshot-20261124T030405Z.db.gz",
    "etcd-snapshot-20261124T030405Z.zst",
    "etcd-snapshot-20261324T030405Z.db.zst",  # month 13
    "etcd-snapshot-20261124T250405Z.db.age",  # hour 25
    "pre-restore-etcd-snapshot-20261124T030405.db.zst",
    # talos-backup names that Go's RFC3339 never writes, or talos-backup's own temporary file
    "homelab-2026-11-24T03:04:05Z.snap.part",
    "homelab-2026-11-24T03:04:05.snap",  # no zone
    "homelab-2026-11-24 03:04:05Z.snap",
    "homelab-2026-11-24T03:04Z.snap",
    "homelab-2026-13-24T03:04:05Z.snap",  # month 13
    "homelab-2026-02-30T03:04:05Z.snap",  # no such day
    "homelab-2026-11-24T03:04:05+0200.snap",  # ISO basic offset, not RFC3339
    "homelab-2026-11-24T03:04:05Z.snap.age.zst",
    "homelab-2026-11-24T03:04:05Z.db",
    "2026-11-24T03:04:05Z.snap",  # no cluster
    "homelab-2026-11-24T03:04:05Z.snap/",
    "README.md", "", ".verified.json",
])
def test_parse_rejects_non_names(bad):
    assert parse(bad) is None, bad
