"""First-use review F7, F8 and C9: a mistyped snapshot name gets the closest names, `list` marks the rows
`latest~1` and `latest~2` pick (safety snapshots are skipped, as `latest~N` skips them), and "use the one before it"
is offered only when there is one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dr import main as talos_dr
from dr.core import naming
from dr.core.errors import ExitCode
from tests.support.tools import run_cli

T0 = datetime(2026, 12, 6, 20, 14, 2, tzinfo=UTC)


@pytest.fixture
def snaps(aws_env, s3_client, bucket, tmp_path, monkeypatch):
    """Three snapshots and a newer safety snapshot in the bucket; an empty project folder as cwd."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DR_TALOS_DIR", str(tmp_path / ".talos"))
    for k in ("DR_STACK_OUTPUTS_FILE", "DR_SNAPSHOT_PREFIX", "DR_AGE_RECIPIENTS"):
        monkeypatch.delenv(k, raising=False)
    names = [naming.snapshot_name(T0 + timedelta(seconds=20 * i)) for i in range(3)]
    for n in [*names, naming.snapshot_name(T0 + timedelta(minutes=5), safety=True)]:
        s3_client.put_object(Bucket=bucket, Key=f"snapshots/{n}", Body=b"not really etcd")
    return bucket, names  # oldest first


def test_a_near_miss_name_suggests_the_closest(snaps):
    bucket, names = snaps
    typo = names[1].replace("T2014", "T2041")  # two digits swapped, as at 3 a.m.
    res = run_cli(talos_dr.main, "verify", typo, "--bucket", bucket)
    assert res.code == ExitCode.NOT_FOUND, res
    line = res.err.strip()
    assert line.count("\n") == 0 and f"did you mean {names[1]}" in line and "`talos-dr list`" in line
    assert f"no snapshot named {typo} in s3://{bucket}/snapshots/" in line


def test_a_name_like_none_gets_no_guess(snaps):
    bucket, _ = snaps
    res = run_cli(talos_dr.main, "verify", "etcd-snapshot-19990101T000000Z.db", "--bucket", bucket)
    assert res.code == ExitCode.NOT_FOUND and "did you mean" not in res.err, res


def test_list_marks_what_latest_tilde_n_picks(snaps):
    bucket, names = snaps
    res = run_cli(talos_dr.main, "list", "--bucket", bucket)
    assert res.code == 0, res
    rows = {line.split()[0]: line for line in res.out.splitlines() if line.startswith(("etcd-", "pre-restore"))}
    assert rows[names[2]].endswith("<- latest")
    assert rows[names[1]].endswith("<- latest~1") and rows[names[0]].endswith("<- latest~2")
    assert not any(v.endswith(("latest", "~1", "~2")) for k, v in rows.items() if k.startswith("pre-restore"))


def test_one_slash_short_is_called_what_it_is(snaps):
    """C2: `s3:/bucket/key` was read as a local file ("does not exist"); it is a mistyped URI."""
    bucket, names = snaps
    res = run_cli(talos_dr.main, "verify", f"s3:/{bucket}/snapshots/{names[0]}")
    assert res.code == ExitCode.CONFIG, res
    assert f"did you mean s3://{bucket}/snapshots/{names[0]}?" in res.err


def test_a_wrong_bucket_names_the_configured_one(snaps):
    """C3: the bucket typed does not exist; the one the settings name is shown next to it."""
    bucket, names = snaps
    res = run_cli(talos_dr.main, "verify", f"s3://{bucket}-typo/snapshots/{names[0]}", "--bucket", bucket)
    assert res.code == ExitCode.BUCKET_NOT_FOUND, res
    assert f"bucket {bucket}-typo does not exist" in res.err and f"the stack's bucket is {bucket};" in res.err


def test_no_older_snapshot_is_not_offered(aws_env, s3_client, bucket, tmp_path, monkeypatch):
    """C9: a corrupt newest snapshot with nothing before it: no "use latest~1"."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DR_TALOS_DIR", str(tmp_path / ".talos"))
    for k in ("DR_STACK_OUTPUTS_FILE", "DR_SNAPSHOT_PREFIX", "DR_AGE_RECIPIENTS"):
        monkeypatch.delenv(k, raising=False)
    s3_client.put_object(Bucket=bucket, Key=f"snapshots/{naming.snapshot_name(T0)}", Body=b"x" * 100)
    res = run_cli(talos_dr.main, "verify", "latest", "--bucket", bucket)
    assert res.code != 0 and "latest~1" not in res.err, res


def test_backup_says_how_many_more_it_kept_and_aligns_the_bucket_listing(sandbox_env):
    """C7: "2 kept" listed only the newest; the bucket listing's columns slipped on the longer pre-restore names."""
    import time

    import boto3

    sb = sandbox_env
    assert run_cli(talos_dr.main, "backup", "--save-to-s3").code == 0
    time.sleep(1.1)  # names have one-second resolution
    s3c = boto3.client("s3", endpoint_url=sb.s3_endpoint)
    s3c.put_object(Bucket=sb.bucket, Key=f"snapshots/{naming.snapshot_name(T0, safety=True)}.zst", Body=b"x")
    res = run_cli(talos_dr.main, "backup", "--save-to-s3")
    assert res.code == 0, res
    assert "2 kept" in res.out and "  ... and 1 more kept" in res.out
    listing = res.out.split("newest first:\n", 1)[1].splitlines()
    rows = [line for line in listing if line.endswith(" old")]
    assert len(rows) == 3 and len({len(line) for line in rows}) == 1, rows


def test_list_json_gives_each_snapshots_age(snaps):
    import json

    from dr.commands import list as list_cmd

    bucket, names = snaps
    res = run_cli(list_cmd.main, "--bucket", bucket, "--json", now=lambda: T0 + timedelta(hours=1))
    rows = {r["name"]: r for r in json.loads(res.out)["snapshots"]}
    assert rows[names[0]]["age_seconds"] == 3600 and rows[names[2]]["age_seconds"] == 3600 - 40
