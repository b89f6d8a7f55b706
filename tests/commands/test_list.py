"""dr.list over local files and moto's S3 server: merging, ordering, ignored names, pagination, verified marks."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from dr.adapters import s3
from dr.commands import list as dr_list
from dr.commands import verify
from dr.core import naming
from dr.core.errors import ExitCode
from tests.support.tools import run_cli

NOW = datetime(2026, 11, 24, 3, 0, 0, tzinfo=UTC)


def _name(hours_ago: float, safety: bool = False) -> str:
    return naming.snapshot_name(NOW - timedelta(hours=hours_ago), safety=safety)


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")  # a project folder: its .talos/ is used
    for k in ("DR_BUCKET", "DR_TALOS_DIR"):
        monkeypatch.delenv(k, raising=False)
    # a stack outputs file without a bucket: "no bucket configured", without asking Pulumi
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"clusterName": "test"}))
    outputs.chmod(0o600)
    monkeypatch.setenv("DR_STACK_OUTPUTS_FILE", str(outputs))
    snapdir = tmp_path / ".talos" / "snapshots"
    snapdir.mkdir(parents=True)
    return snapdir


def _list(*argv: str):
    return run_cli(dr_list.main, *argv, now=lambda: NOW)


def test_nothing_here_and_s3_not_checked_is_not_called_nothing_to_restore(cwd):
    """With no bucket known, an empty local folder is not "no snapshots" (exit 4)."""
    res = _list()
    assert res.code == ExitCode.CONFIG, res
    assert "S3 was not checked" in res.out and "no bucket configured" in res.err and "--bucket" in res.err


def test_nothing_anywhere_is_not_found(cwd, s3_client, bucket):
    res = _list("--bucket", bucket)
    assert res.code == ExitCode.NOT_FOUND, res
    assert "no snapshots" in res.out and "talos-dr backup" in res.err


def test_an_unreadable_outputs_file_is_an_error_not_an_empty_list(cwd, monkeypatch, tmp_path):
    (cwd / _name(1)).write_bytes(b"x")
    monkeypatch.setenv("DR_STACK_OUTPUTS_FILE", str(tmp_path / "nope.json"))
    res = _list()
    assert res.code == ExitCode.CONFIG, res
    assert "nope.json" in res.err


def test_local_only_with_a_note_and_ignored_names(cwd):
    (cwd / _name(1)).write_bytes(b"a" * 2048)
    (cwd / _name(30)).write_bytes(b"b" * 10)
    (cwd / _name(2, safety=True)).write_bytes(b"c")
    (cwd / (_name(0.5) + ".part")).write_bytes(b"partial")
    (cwd / "notes.txt").write_text("x")
    (cwd / "etcd-snapshot-latest.db").write_bytes(b"x")
    res = _list("--json")
    assert res.code == 0, res
    doc = json.loads(res.out)
    assert [r["name"] for r in doc["snapshots"]] == [_name(1), _name(2, safety=True), _name(30)]
    assert {r["where"] for r in doc["snapshots"]} == {"local"}
    assert doc["snapshots"][0]["size"] == 2048 and doc["snapshots"][1]["pre_restore"] is True
    assert doc["s3"] is None and "no bucket configured" in doc["notes"][0]
    text = _list()
    assert text.code == 0
    lines = text.out.splitlines()
    assert lines[0].startswith("3 snapshots (3 local")
    assert lines[2].startswith(_name(1)) and "1h00m" in lines[2] and "2.0 KiB" in lines[2] and "never" in lines[2]
    assert "1d06h" in lines[4]


def test_local_and_s3_merged_newest_first(cwd, s3_client, bucket):
    (cwd / _name(1)).write_bytes(b"local-and-s3")
    (cwd / _name(5)).write_bytes(b"local only")
    body = {_name(1): b"local-and-s3", _name(3): b"s3 only", _name(48): b"old s3"}
    for name, data in body.items():
        s3_client.put_object(Bucket=bucket, Key=f"snapshots/{name}", Body=data,
                             Metadata=s3.snapshot_metadata(sha256=None, size=len(data), taken_at=NOW,
                                                           cluster="test", revision=100))
    # not snapshots, or not under the prefix: ignored
    s3_client.put_object(Bucket=bucket, Key="snapshots/README.txt", Body=b"x")
    s3_client.put_object(Bucket=bucket, Key="snapshots/etcd-snapshot-bad.db", Body=b"x")
    s3_client.put_object(Bucket=bucket, Key=f"other/{_name(0.1)}", Body=b"x")
    s3_client.put_object(Bucket=bucket, Key=f"snapshots/{_name(0.2)}/", Body=b"")
    s3.set_tags(s3_client, bucket, f"snapshots/{_name(3)}",
                {s3.TAG_VERIFIED_AT: "2026-11-24T02:00:00Z", s3.TAG_VERIFIED_KEYS: "35"})
    res = _list("--bucket", bucket, "--json")
    assert res.code == 0, res
    doc = json.loads(res.out)
    rows = {r["name"]: r for r in doc["snapshots"]}
    assert [r["name"] for r in doc["snapshots"]] == [_name(1), _name(3), _name(5), _name(48)]
    assert rows[_name(1)]["where"] == "both" and rows[_name(3)]["where"] == "s3"
    assert rows[_name(5)]["where"] == "local" and rows[_name(48)]["where"] == "s3"
    assert rows[_name(3)]["revision"] == 100 and rows[_name(5)]["revision"] is None
    assert rows[_name(3)]["verified_at"] == "2026-11-24T02:00:00Z" and rows[_name(3)]["verified_keys"] == 35
    assert rows[_name(48)]["verified_at"] is None
    assert (doc["total"], doc["local"], doc["in_s3"]) == (4, 2, 3)
    text = _list("--bucket", bucket)
    assert text.code == 0
    line = next(ln for ln in text.out.splitlines() if ln.startswith(_name(3)))
    assert " s3 " in line and "100" in line and "2026-11-24T02:00:00Z (35 keys)" in line


def test_local_verification_is_shown(cwd, real_snapshot, tmp_path):
    snap = cwd / _name(1)
    snap.write_bytes(real_snapshot.read_bytes())
    work = tmp_path / "tmp"
    work.mkdir()
    res = run_cli(verify.main, str(snap), "--tmp-dir", str(work))
    assert res.code == 0, res
    rep = json.loads(run_cli(verify.main, str(snap), "--json", "--tmp-dir", str(work)).out)
    doc = json.loads(_list("--json").out)
    [row] = doc["snapshots"]
    assert row["revision"] == rep["revision"] and row["verified_at"] == rep["verified_at"]
    assert row["verified_keys"] == rep["total_keys"]
    # a file changed after its verification is no longer shown as verified
    snap.write_bytes(real_snapshot.read_bytes() + b"x")
    [row] = json.loads(_list("--json").out)["snapshots"]
    assert row["verified_at"] is None and row["revision"] is None


@pytest.mark.slow
def test_more_than_a_thousand_objects_are_all_listed(cwd, s3_client, bucket, monkeypatch):
    # 1,000 keys that sort before every snapshot name fill the first page, so the snapshots are on later pages.
    junk = [f"snapshots/a-junk-{i:04d}" for i in range(1000)]
    snaps = [f"snapshots/{_name(h)}" for h in range(1, 31)]

    def put(key: str) -> None:
        s3_client.put_object(Bucket=bucket, Key=key, Body=b"x")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, junk + snaps))
    heads = []
    real_head = s3.head_snapshot
    monkeypatch.setattr(s3, "head_snapshot", lambda c, b, k, **kw: heads.append(k) or real_head(c, b, k, **kw))
    res = _list("--bucket", bucket, "--limit", "5", "--json")
    assert res.code == 0, res
    assert heads == [f"snapshots/{_name(h)}" for h in range(1, 6)]  # metadata read for the rows shown only
    doc = json.loads(res.out)
    assert doc["total"] == 30 and doc["in_s3"] == 30 and doc["shown"] == 5
    assert [r["name"] for r in doc["snapshots"]] == [_name(h) for h in range(1, 6)]
    assert any("showing the newest 5 of 30" in n for n in doc["notes"])
    text = _list("--bucket", bucket)  # default limit 20
    assert text.code == 0
    assert text.out.startswith("30 snapshots (0 local in .talos/snapshots, 30 in s3://")
    assert len([ln for ln in text.out.splitlines() if ln.startswith("etcd-snapshot-")]) == 20
    assert "--limit 0" in text.err


def test_s3_failure_still_shows_local_and_exits_non_zero(cwd, monkeypatch):
    (cwd / _name(1)).write_bytes(b"x")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    res = _list("--bucket", "some-bucket")
    assert res.code == ExitCode.S3_ERROR, res
    assert _name(1) in res.out
    assert "listing s3://some-bucket/snapshots/ failed" in res.err


def test_missing_bucket_is_its_own_error(cwd, s3_client):
    res = _list("--bucket", "no-such-bucket-here")
    assert res.code == ExitCode.BUCKET_NOT_FOUND, res


def test_sizes_that_differ_between_copies_are_flagged(cwd, s3_client, bucket):
    (cwd / _name(1)).write_bytes(b"local copy")
    s3_client.put_object(Bucket=bucket, Key=f"snapshots/{_name(1)}", Body=b"a different, longer copy")
    res = _list("--bucket", bucket)
    assert res.code == 0, res
    assert "B!" in res.out and "not the same snapshot" in res.err


def test_bad_limit(cwd):
    assert _list("--limit", "-1").code == ExitCode.CONFIG


def test_a_plain_and_a_compressed_object_of_the_same_name_are_two_rows(cwd, s3_client, bucket):
    """hostile-inputs 22: `X.db` and `X.db.zst` in S3 at once are two snapshots (perhaps of two clusters). Each gets
    its own row under its stored name, the header counts both, and a note says the plain name is ambiguous (verify
    and restore refuse it: store.find)."""
    plain, other = _name(2), _name(5)
    s3_client.put_object(Bucket=bucket, Key=f"snapshots/{plain}", Body=b"p" * 3000)
    s3_client.put_object(Bucket=bucket, Key=f"snapshots/{plain}.zst", Body=b"z" * 800)
    s3_client.put_object(Bucket=bucket, Key=f"snapshots/{other}.zst", Body=b"o" * 100)
    (cwd / _name(1)).write_bytes(b"local")
    doc = json.loads(_list("--bucket", bucket, "--json").out)
    rows = {r["name"]: r for r in doc["snapshots"]}
    assert [r["name"] for r in doc["snapshots"]] == [_name(1), f"{plain}.zst", plain, other]
    assert (doc["total"], doc["local"], doc["in_s3"]) == (4, 1, 3)
    assert (rows[plain]["format"], rows[plain]["size"], rows[plain]["s3_name"]) == ("plain", 3000, plain)
    assert (rows[f"{plain}.zst"]["format"], rows[f"{plain}.zst"]["size"]) == ("zstd", 800)
    assert rows[plain]["same_plain_name"] and rows[f"{plain}.zst"]["same_plain_name"]
    assert not rows[other]["same_plain_name"] and rows[other]["s3_name"] == f"{other}.zst"
    [note] = [n for n in doc["notes"] if "different snapshots" in n]
    assert f"{plain} is the name of 2 different snapshots in S3 ({plain}, {plain}.zst)" in note
    assert f"talos-dr verify {plain}.zst" in note

    text = _list("--bucket", bucket)
    assert text.code == 0, text
    assert text.out.startswith("4 snapshots (1 local in .talos/snapshots, 3 in s3://") and ", newest first" in text.out
    lines = text.out.splitlines()
    assert len([ln for ln in lines if ln.startswith(plain)]) == 2
    assert any(ln.startswith(f"{plain}.zst ") and " zstd " in ln for ln in lines)
    assert any(ln.startswith(f"{plain} ") and " plain " in ln for ln in lines)
    assert f"note: {plain} is the name of 2 different snapshots in S3" in text.err


def test_a_local_copy_merges_with_the_object_of_its_own_stored_name_only(cwd, s3_client, bucket):
    plain = _name(2)
    (cwd / plain).write_bytes(b"p" * 3000)
    s3_client.put_object(Bucket=bucket, Key=f"snapshots/{plain}", Body=b"p" * 3000)
    s3_client.put_object(Bucket=bucket, Key=f"snapshots/{plain}.zst", Body=b"z" * 800)
    doc = json.loads(_list("--bucket", bucket, "--json").out)
    rows = {r["name"]: r for r in doc["snapshots"]}
    assert set(rows) == {plain, f"{plain}.zst"}
    assert rows[plain]["where"] == "both" and rows[plain]["s3_name"] == plain
    assert rows[f"{plain}.zst"]["where"] == "s3"
    assert (doc["total"], doc["local"], doc["in_s3"]) == (2, 1, 2)

