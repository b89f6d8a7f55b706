"""dr.core.status: the verdicts, as a table of the states the backups, the node and the bucket can be in. The clock
is an argument."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dr.core import status as st
from dr.core.errors import ExitCode
from dr.core.etcd_health import EtcdHealth

NOW = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
H = timedelta(hours=1)
GIB = 2**30


def healthy(**kw) -> st.StatusFacts:
    f = st.StatusFacts(
        interval=H, cluster="prod", bucket="b", newest_s3=NOW - 20 * timedelta(minutes=1),
        newest_s3_name="etcd-snapshot-20261206T024000Z.db", newest_local=NOW - 3 * H, newest_local_name="x.db",
        last_run=st.RunRecord(NOW - 20 * timedelta(minutes=1), True), last_success=NOW - 20 * timedelta(minutes=1),
        alarms_seen=5, last_verified=NOW - timedelta(days=1), last_verified_name="x.db",
        credential_not_after=NOW + timedelta(days=200), talosconfig_not_after=NOW + timedelta(days=300),
        etcd=EtcdHealth(db_size=100 * 2**20, db_size_in_use=90 * 2**20, quota=2 * GIB),
        bucket_facts=st.BucketFacts("Enabled", ("hourly", "daily", "weekly", "monthly"),
                                    ("hourly", "daily", "weekly", "monthly"), None),
        log_group="/talos-dr/prod/snapshots",
    )
    for k, v in kw.items():
        setattr(f, k, v)
    return f


def states(f: st.StatusFacts, now: datetime = NOW) -> dict[str, str]:
    return {c.name: c.state for c in st.evaluate(f, now)}


def test_all_well_is_ok_and_exit_0():
    checks = st.evaluate(healthy(), NOW)
    assert [c.name for c in checks] == list(st.ORDER)
    assert {c.state for c in checks} == {st.OK} and st.exit_code(checks) == ExitCode.OK == 0
    assert st.rpo_seconds(healthy(), NOW) == 20 * 60


@pytest.mark.parametrize("change, name, state, fix_words", [
    ({"newest_s3": NOW - 2 * H}, st.S3_SNAPSHOT, st.WARN, "talos-dr backup --save-to-s3"),
    ({"newest_s3": NOW - 2 * H + timedelta(seconds=1)}, st.S3_SNAPSHOT, st.OK, None),
    ({"newest_s3": NOW - 25 * H}, st.S3_SNAPSHOT, st.FAIL, "talos-dr backup --save-to-s3"),
    ({"newest_s3": None, "newest_s3_name": None}, st.S3_SNAPSHOT, st.FAIL, "talos-dr backup --save-to-s3"),
    ({"newest_local": None}, st.LOCAL_SNAPSHOT, st.OK, None),
    ({"last_run": st.RunRecord(NOW - 10 * timedelta(minutes=1), False)}, st.SCHEDULED_RUN, st.FAIL, "aws logs tail"),
    ({"last_run": None}, st.SCHEDULED_RUN, st.FAIL, "pulumi up"),
    ({"last_run": st.RunRecord(NOW - 2 * H, True)}, st.SCHEDULED_RUN, st.WARN, "pulumi up"),
    ({"alarms_firing": ["prod-no-snapshot-1a2b3c4"]}, st.ALARMS, st.FAIL, "describe-alarms"),
    ({"alarms_seen": 0}, st.ALARMS, st.WARN, "pulumi up"),
    ({"last_verified": None}, st.VERIFIED, st.WARN, "talos-dr verify latest"),
    ({"last_verified": NOW - timedelta(days=8)}, st.VERIFIED, st.WARN, "talos-dr verify latest"),
    ({"etcd": EtcdHealth(db_size=GIB, db_size_in_use=GIB, quota=GIB, alarms=("NOSPACE",))}, st.ETCD, st.FAIL,
     "talosctl etcd alarm disarm"),
    ({"etcd": EtcdHealth(db_size=int(1.7 * GIB), db_size_in_use=0, quota=2 * GIB)}, st.ETCD, st.WARN,
     "talosctl etcd defrag"),
    ({"etcd": EtcdHealth(db_size=int(1.95 * GIB), db_size_in_use=0, quota=2 * GIB)}, st.ETCD, st.FAIL,
     "talosctl etcd defrag"),
    ({"credential_not_after": NOW + timedelta(days=29)}, st.CREDENTIAL, st.WARN, "pulumi up"),
    ({"credential_not_after": NOW - timedelta(days=1)}, st.CREDENTIAL, st.FAIL, "pulumi up"),
    ({"talosconfig_not_after": NOW + timedelta(days=10)}, st.TALOSCONFIG, st.WARN, "pulumi stack output talosconfig"),
    ({"bucket_facts": st.BucketFacts("Suspended", ("hourly", "daily", "weekly", "monthly"),
                                     ("hourly", "daily", "weekly", "monthly"), None)}, st.VERSIONING, st.FAIL, "pulumi up"),
    ({"bucket_facts": st.BucketFacts("Enabled", ("hourly",), ("hourly", "daily", "weekly", "monthly"), None)},
     st.LIFECYCLE, st.WARN, "pulumi up"),
])
def test_each_state_of_the_world(change, name, state, fix_words):
    f = healthy(**change)
    checks = {c.name: c for c in st.evaluate(f, NOW)}
    assert checks[name].state == state, checks[name]
    if fix_words:
        assert fix_words in (checks[name].fix or ""), checks[name]
    others = {c.state for n, c in checks.items() if n != name}
    if name == st.S3_SNAPSHOT and change.get("newest_s3") is None:
        others = {c.state for n, c in checks.items() if n not in (name, st.LOCAL_SNAPSHOT)}
    assert others == {st.OK}, [c for n, c in checks.items() if n != name and c.state != st.OK]
    expected = {st.OK: ExitCode.OK, st.WARN: ExitCode.STATUS_WARN, st.FAIL: ExitCode.STATUS_FAIL}[state]
    assert st.exit_code(list(checks.values())) == expected


def test_what_could_not_be_checked_is_a_line_and_not_a_clean_bill():
    f = healthy(etcd=None)
    f.unchecked[st.ETCD] = "the node did not answer (connection refused)"
    checks = {c.name: c for c in st.evaluate(f, NOW)}
    assert checks[st.ETCD].state == st.UNCHECKED and "connection refused" in checks[st.ETCD].summary
    assert st.exit_code(list(checks.values())) == ExitCode.STATUS_WARN == 26
    silent = healthy(credential_not_after=None)  # nothing read it, nobody said why: still a line
    c = {c.name: c for c in st.evaluate(silent, NOW)}[st.CREDENTIAL]
    assert c.state == st.UNCHECKED


def test_the_clock_moves_not_the_files():
    f = healthy()
    assert states(f, NOW)[st.S3_SNAPSHOT] == st.OK
    later = NOW + 2 * H
    assert states(f, later)[st.S3_SNAPSHOT] == st.WARN and states(f, later)[st.SCHEDULED_RUN] == st.WARN
    assert st.exit_code(st.evaluate(f, later)) == ExitCode.STATUS_WARN


def test_exit_codes_are_listed():
    from dr.core.errors import EXIT_CODE_MEANING

    assert int(ExitCode.STATUS_WARN) == 26 and int(ExitCode.STATUS_FAIL) == 27
    assert "status" in EXIT_CODE_MEANING[ExitCode.STATUS_WARN] and "status" in EXIT_CODE_MEANING[ExitCode.STATUS_FAIL]
