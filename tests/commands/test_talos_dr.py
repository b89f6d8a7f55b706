"""The one installed `talos-dr` command, short help with examples, completion, JSON on failure, a closed
pipe, and `prune`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dr import main as talos_dr
from dr.adapters import s3
from dr.adapters.store import S3Store
from dr.commands import prune
from dr.core import naming, tiers
from dr.core.errors import ExitCode
from dr.core.integrity import iter_file
from tests.support.tools import ROOT, run_cli

VENV_BIN = ROOT / ".venv" / "bin"
NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


def _talos_dr(*argv: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    exe = VENV_BIN / "talos-dr"
    assert exe.exists(), "make venv installs the talos-dr command ([project.scripts] in pyproject.toml)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(exe), *argv], cwd=cwd, capture_output=True, text=True, env=env, timeout=60, **kw)


def test_the_installed_command_runs_from_any_folder(tmp_path):
    res = _talos_dr("--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    for cmd in ("restore", "list", "verify", "backup", "prune", "completion"):
        assert f"  {cmd}" in res.stdout
    ver = _talos_dr("verify", str(tmp_path / "nope.db"), cwd=tmp_path)
    assert ver.returncode == ExitCode.NOT_FOUND and "does not exist" in ver.stderr and "Traceback" not in ver.stderr


def test_python_dash_m_keeps_working(tmp_path):
    res = subprocess.run([sys.executable, "-m", "dr.list", "-h"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0 and "examples:" in res.stdout


def test_unknown_command_suggests_the_near_one():
    res = run_cli(talos_dr.main, "restor")
    assert res.code == ExitCode.USAGE and "did you mean `talos-dr restore`" in res.err


@pytest.mark.parametrize("cmd", sorted(talos_dr.COMMANDS))
def test_short_help_fits_a_screen_and_has_examples(cmd, capsys):
    with pytest.raises(SystemExit) as ei:
        talos_dr.main([cmd, "-h"])
    assert ei.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: talos-dr {cmd}")
    assert len(text.splitlines()) <= 40, text
    if cmd not in ("volumes", "rebuild", "backup"):
        assert "examples:" in text and f"talos-dr {cmd}" in text.split("examples:")[1]


def test_completion_scripts_know_the_commands_and_flags():
    for shell in ("bash", "zsh"):
        res = run_cli(talos_dr.main, "completion", shell)
        assert res.code == 0
        assert "restore" in res.out and "--identity" in res.out and "--prefix" in res.out
    assert run_cli(talos_dr.main, "completion", "fish").code == ExitCode.USAGE


def test_json_failures_are_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")  # a project folder: its .talos/ is used
    monkeypatch.setenv("DR_STACK_OUTPUTS_FILE", str(tmp_path / "missing.json"))
    res = run_cli(talos_dr.main, "list", "--json")
    doc = json.loads(res.out)
    assert res.code == ExitCode.CONFIG and doc["ok"] is False and doc["exit_code"] == ExitCode.CONFIG
    ver = run_cli(talos_dr.main, "verify", str(tmp_path / "nope.db"), "--json")
    assert ver.code == ExitCode.NOT_FOUND and json.loads(ver.out)["exit_code"] == ExitCode.NOT_FOUND


def test_a_closed_pipe_is_not_an_error(tmp_path):
    exe = VENV_BIN / "talos-dr"
    res = subprocess.run(f"set -o pipefail; {exe} exit-codes | head -1", shell=True, executable="/bin/bash",
                         capture_output=True, text=True, cwd=tmp_path)
    assert "Traceback" not in res.stderr and res.stdout.startswith("  0")


# --- prune ---------------------------------------------------------------------------------------------------


def test_prune_local_keeps_the_newest_and_safety_snapshots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")  # a project folder: its .talos/ is used
    snaps = tmp_path / ".talos" / "snapshots"
    (snaps / "downloads").mkdir(parents=True)
    old = [snaps / naming.snapshot_name(NOW - timedelta(days=d)) for d in (1, 10, 20, 2, 30)]
    safety = snaps / naming.snapshot_name(NOW - timedelta(days=30), safety=True)
    foreign = snaps / "notes.txt"
    dl = snaps / "downloads" / naming.snapshot_name(NOW - timedelta(days=40))
    for p in [*old, safety, foreign, dl]:
        p.write_bytes(b"x")
    res = run_cli(prune.main, "--bucket", "unused-bucket", now=lambda: NOW)
    assert res.code == 0, res
    # The newest three always stay (dr.core.retention.KEEP_NEWEST), the older ones past 7 days go.
    assert old[0].exists() and old[3].exists() and old[1].exists() and not old[2].exists() and not old[4].exists()
    assert safety.exists() and foreign.exists() and dl.exists()  # the newest download in its folder stays


@pytest.mark.slow
def test_prune_s3_by_tier_only_ours_never_latest(tmp_path, monkeypatch, s3_client, bucket, real_snapshot):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")  # a project folder: its .talos/ is used
    store = S3Store(s3_client, bucket, "snapshots/")
    now = datetime.now(UTC)
    mine = []
    for days in (30, 40, 3, 1, 0.1):  # uploaded in this order; the last three uploaded always stay
        with open(real_snapshot, "rb") as f:
            mine.append(store.put(iter_file(f), naming.snapshot_name(now - timedelta(days=days)), compress=True,
                                  metadata={s3.META_SOURCE: "dr.backup"}))
    foreign = "snapshots/talos-sandbox-2020-01-01T00:00:00Z.snap"
    s3_client.put_object(Bucket=bucket, Key=foreign, Body=real_snapshot.read_bytes())
    put_tier_lifecycle(s3_client, bucket, tiers.DEFAULT_DAYS)
    dry = run_cli(prune.main, "--s3", "--bucket", bucket, "--dry-run", "--json")
    assert dry.code == 0, dry
    plan = {d["key"]: d for d in json.loads(dry.out)["s3"]}
    # 30 days old: its tier (monthly, the first in the bucket) keeps it 365 days; 3 days old: weekly? no, first of
    # its month too or week: whichever, every tier outlives 3 days except hourly (2)
    assert not plan[foreign]["delete"] and "not written by talos-dr" in plan[foreign]["reason"]
    assert not plan[mine[-1].key]["delete"]  # the newest
    # Without a terminal and without --yes nothing is deleted.
    doomed = [k for k, d in plan.items() if d["delete"]]
    res = run_cli(prune.main, "--s3", "--bucket", bucket)
    if doomed:
        assert res.code == ExitCode.NOT_CONFIRMED, res
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "snapshots/latest" in keys and foreign in keys and all(e.key in keys for e in mine)
    # An hourly-tagged old one of ours goes with --yes; latest and the foreign object stay.
    s3_client.put_object_tagging(Bucket=bucket, Key=mine[1].key, Tagging={"TagSet": [
        {"Key": "retention", "Value": "hourly"}]})
    res = run_cli(prune.main, "--s3", "--bucket", bucket, "--yes")
    assert res.code == 0, res
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert mine[1].key not in keys and mine[0].key in keys and all(e.key in keys for e in mine[2:])
    assert "snapshots/latest" in keys and foreign in keys


def put_tier_lifecycle(s3_client, bucket, days):
    """The bucket's lifecycle rules as infra/bucket.py writes them (one per tier), in the S3 API's shape."""
    s3_client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        {"ID": f"expire-{t}-snapshots", "Status": "Enabled", "Expiration": {"Days": d},
         "Filter": {"And": {"Prefix": "snapshots/", "Tags": [{"Key": "retention", "Value": t}]}}}
        for t, d in days.items()]})


def test_prune_s3_uses_the_stacks_tier_days_not_the_defaults(tmp_path, monkeypatch, s3_client, bucket):
    monkeypatch.chdir(tmp_path)
    now = datetime.now(UTC)
    keys_ = []
    for days in (400, 1):
        key = f"snapshots/{naming.snapshot_name(now - timedelta(days=days))}"
        s3_client.put_object(Bucket=bucket, Key=key, Body=b"x", Metadata={s3.META_SOURCE: "schedule"},
                             Tagging="retention=monthly")
        keys_.append(key)
    for hours in (3, 2, 1):  # three newer uploads: the newest three are always kept, whatever the days say
        s3_client.put_object(Bucket=bucket, Key=f"snapshots/{naming.snapshot_name(now - timedelta(hours=hours))}",
                             Body=b"x", Metadata={s3.META_SOURCE: "schedule"}, Tagging="retention=hourly")
    # neither stack output nor lifecycle rules: refuse to guess
    res = run_cli(prune.main, "--s3", "--bucket", bucket, "--dry-run")
    assert res.code == ExitCode.CONFIG and "retention days" in res.err, res
    # the stack says monthlies stay 730 days: the 400-day-old one stays (the default 365 would delete it)
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"etcdBackupBucketName": bucket, "snapshotPrefix": "snapshots/",
                                   "snapshotRetentionDays": {"hourly": 2, "daily": 14, "weekly": 56, "monthly": 730}}))
    outputs.chmod(0o600)
    res = run_cli(prune.main, "--s3", "--outputs-file", str(outputs), "--dry-run", "--json")
    assert res.code == 0, res
    plan = {d["key"]: d for d in json.loads(res.out)["s3"]}
    assert not plan[keys_[0]]["delete"] and "younger than 730 days" in plan[keys_[0]]["reason"]
    assert "lifecycle expires it about" in plan[keys_[0]]["reason"]
    assert "tier days from the stack" in res.err
    # the bucket's lifecycle rules are the fallback
    put_tier_lifecycle(s3_client, bucket, {"hourly": 2, "daily": 14, "weekly": 56, "monthly": 300})
    res = run_cli(prune.main, "--s3", "--bucket", bucket, "--dry-run", "--json")
    assert res.code == 0, res
    plan = {d["key"]: d for d in json.loads(res.out)["s3"]}
    assert plan[keys_[0]]["delete"] and "older than 300 days" in plan[keys_[0]]["reason"]


def test_prune_s3_denied_by_the_vault_says_who_may_delete(tmp_path, monkeypatch, s3_client, bucket):
    from botocore.exceptions import ClientError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")  # a project folder: its .talos/ is used
    now = datetime.now(UTC)
    for days in (30, 0.3, 0.2, 0.1):  # the newest three always stay; the 30-day-old one is due
        s3_client.put_object(Bucket=bucket, Key=f"snapshots/{naming.snapshot_name(now - timedelta(days=days))}",
                             Body=b"x", Metadata={s3.META_SOURCE: "schedule"}, Tagging="retention=hourly")
    put_tier_lifecycle(s3_client, bucket, tiers.DEFAULT_DAYS)
    calls = []

    def denied(params, **kw):  # what S3 answers under NoDeletesButLifecycle (moto does not evaluate it)
        calls.append(params)
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "explicit deny"},
                           "ResponseMetadata": {"HTTPStatusCode": 403}}, "DeleteObject")

    real = s3.make_client

    def client(*a, **k):
        c = real(*a, **k)
        c.meta.events.register("before-call.s3.DeleteObject", denied)
        return c

    monkeypatch.setattr(s3, "make_client", client)
    res = run_cli(prune.main, "--s3", "--bucket", bucket, "--yes")
    assert res.code == ExitCode.ACCESS_DENIED, res
    assert "snapshotDeleter" in res.err and "lifecycle rules expire these" in res.err
    assert len(calls) == 1, "the first refusal stops it"


def test_lifecycle_expiry_rounds_up_to_midnight_utc():
    from dr.commands.prune import lifecycle_expiry, tier_days_from_lifecycle

    assert lifecycle_expiry(datetime(2026, 12, 1, 10, 30, tzinfo=UTC), 2) == datetime(2026, 12, 4, tzinfo=UTC)
    assert lifecycle_expiry(datetime(2026, 12, 1, tzinfo=UTC), 2) == datetime(2026, 12, 3, tzinfo=UTC)
    rules = [{"Status": "Enabled", "Expiration": {"Days": 9},
              "Filter": {"And": {"Prefix": "snapshots/", "Tags": [{"Key": "retention", "Value": "daily"}]}}},
             {"Status": "Disabled", "Expiration": {"Days": 1},
              "Filter": {"And": {"Prefix": "snapshots/", "Tags": [{"Key": "retention", "Value": "hourly"}]}}},
             {"Status": "Enabled", "Expiration": {"ExpiredObjectDeleteMarker": True}, "Filter": {"Prefix": "snapshots/"}}]
    assert tier_days_from_lifecycle(rules) == {"daily": 9}


def test_json_failures_carry_what_the_command_knew_and_the_same_code(tmp_path, monkeypatch):
    """One mechanism (cli.run's json_out) for every --json failure: a Ctrl-C in prune or verify still prints one
    document, with the command's own fields and the exit code the command returns."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")  # a project folder: its .talos/ is used
    (tmp_path / ".talos" / "snapshots").mkdir(parents=True)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(prune, "prune_local", interrupted)
    res = run_cli(prune.main, "--json", "--bucket", "unused-bucket")
    doc = json.loads(res.out)
    assert res.code == doc["exit_code"] == ExitCode.INTERRUPTED and doc["ok"] is False and doc["local"] == []

    from dr.commands import verify

    monkeypatch.setattr(verify, "fetch", interrupted)
    snap = tmp_path / "etcd-snapshot-20260101T000000Z.db"
    snap.write_bytes(b"x")
    res = run_cli(verify.main, str(snap), "--json", "--tmp-dir", str(tmp_path))
    doc = json.loads(res.out)
    assert res.code == doc["exit_code"] == ExitCode.INTERRUPTED and doc["source"] == str(snap)
