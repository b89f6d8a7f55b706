"""One contract for every snapshot store (dr.adapters.store): the local folder and the S3 prefix (moto's real S3
server) pass the same tests. The models are restic's backend suite (internal/backend/test/tests.go: what is saved
is loaded back byte for byte, listed under its name, stat'ed with its size; a failed save leaves nothing; an existing
name is never overwritten; a missing one is "not found") and gardener etcd-backup-restore's snapstore tests
(list, fetch, delete against each provider, with the snapshot kinds and times taken from the names).

Where the stores must differ it is said: the verification's SHA-256 is the whole local file's, but the plaintext's
content SHA-256 for an S3 object (dr.adapters.store.Verification); object metadata exists only in S3."""

from __future__ import annotations

import hashlib
import os
import stat as stat_mod
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dr.adapters import s3
from dr.adapters.store import CATALOG_NAME, Entry, LocalStore, S3Store, Verification, fetch, find, newest_first
from dr.core import naming
from dr.core.age_keys import parse_identities, recipients
from dr.core.errors import (
    ConfigError,
    CorruptSnapshot,
    DRError,
    EmptySnapshot,
    IntegrityError,
    NotASnapshot,
    SnapshotEncrypted,
    SnapshotNotFound,
    TruncatedSnapshot,
)
from dr.core.formats import sniff
from tests.support.snapshots import age_keygen, chunked, synthetic_snapshot
from tests.support.tools import require_binary

PREFIX = "snapshots/"
TS = datetime(2026, 11, 24, 3, 4, 5, tzinfo=UTC)
PLAIN = naming.snapshot_name(TS)  # etcd-snapshot-20261124T030405Z.db
FORMATS = [(False, False), (True, False), (False, True), (True, True)]
FORMAT_IDS = ["plain", "zstd", "age", "zstd+age"]


# --- the two stores, and what a test may do behind a store's back ----------------------------------------------


@dataclass
class Backend:
    """A store plus raw access to what it holds (to plant, damage or remove things as another program would)."""

    store: Any
    kind: str
    tmp: Path
    client: Any = None
    bucket: str | None = None

    def raw_names(self) -> list[str]:
        """Every name present, whatever it is: files (``.part`` included) or every object version, and pending
        multipart uploads."""
        if self.kind == "local":
            root = self.store.root
            return sorted(p.name for p in root.iterdir() if p.name != CATALOG_NAME) if root.is_dir() else []
        versions = self.client.list_object_versions(Bucket=self.bucket, Prefix="")
        keys = [v["Key"] for v in versions.get("Versions", [])] + [m["Key"] for m in versions.get("DeleteMarkers", [])]
        uploads = self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        return sorted(keys + [f"(upload) {u['Key']}" for u in uploads])

    def raw_write(self, name: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        if self.kind == "local":
            self.store.root.mkdir(parents=True, exist_ok=True)
            (self.store.root / name).write_bytes(data)
        else:
            self.client.put_object(Bucket=self.bucket, Key=PREFIX + name, Body=data, Metadata=metadata or {})

    def raw_read(self, name: str) -> bytes:
        if self.kind == "local":
            return (self.store.root / name).read_bytes()
        return self.client.get_object(Bucket=self.bucket, Key=PREFIX + name)["Body"].read()

    def raw_delete(self, name: str) -> None:
        if self.kind == "local":
            (self.store.root / name).unlink()
        else:
            self.client.delete_object(Bucket=self.bucket, Key=PREFIX + name)

    def verified_sha256(self, entry: Entry, plaintext: bytes) -> str:
        """What ``Verification.sha256`` is for this store: the whole local file, or an S3 object's plaintext content
        SHA-256 (its trailer)."""
        if self.kind == "local":
            return hashlib.sha256(entry.path.read_bytes()).hexdigest()
        return plaintext[-32:].hex()


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path) -> Backend:
    if request.param == "local":
        return Backend(LocalStore(tmp_path / "snapshots"), "local", tmp_path)
    client = request.getfixturevalue("s3_client")
    bucket = request.getfixturevalue("bucket")
    return Backend(S3Store(client, bucket, PREFIX), "s3", tmp_path, client, bucket)


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return age_keygen(tmp_path_factory.mktemp("age"))


@pytest.fixture(scope="module")
def other_key(tmp_path_factory):
    return age_keygen(tmp_path_factory.mktemp("age-other"))


@pytest.fixture(scope="module")
def snap() -> bytes:
    """A valid snapshot: random pages, then free (zeroed) pages as bbolt leaves them."""
    body = synthetic_snapshot(6, seed=7)[:-32] + b"\0" * (40 * 4096)
    return body + hashlib.sha256(body).digest()


def _put(backend: Backend, data: bytes, *, compress: bool = False, encrypt: bool = False, plain: str = PLAIN,
         key=None, **kw) -> Entry:
    recips = recipients([key.recipient]) if encrypt else ()
    return backend.store.put(chunked(data, 65536), plain, compress=compress, recipients=recips, **kw)


def _out(backend: Backend) -> Path:
    d = backend.tmp / "out"
    d.mkdir(exist_ok=True)
    return d


def _cli(argv: list[str], data: bytes) -> bytes:
    proc = subprocess.run(argv, input=data, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


# --- put, list, stat, fetch ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("compress", "encrypt"), FORMATS, ids=FORMAT_IDS)
def test_put_then_list_stat_and_fetch_round_trip(backend, snap, key, compress, encrypt):
    stored = naming.stored_name(PLAIN, compressed=compress, encrypted=encrypt)
    entry = _put(backend, snap, compress=compress, encrypt=encrypt, key=key)
    assert entry.name.name == stored and entry.name.plain == PLAIN
    assert entry.format == naming.format_name(compress, encrypt)
    assert entry.sha256 == snap[-32:].hex() and entry.plain_size == len(snap)

    raw = backend.raw_read(stored)
    assert entry.size == len(raw)
    assert sniff(raw) == ("age" if encrypt else "zstd" if compress else "bbolt")
    if not compress and not encrypt:
        assert raw == snap

    listed = backend.store.list()
    assert [e.name.name for e in listed] == [stored]
    assert listed[0].size == len(raw) and listed[0].name.taken_at == TS

    for name in (stored, PLAIN):  # by stored AND by plain name
        st = backend.store.stat(name)
        assert st.name.name == stored, name
        assert st.size == len(raw)
        assert st.described

    dest = _out(backend) / PLAIN
    seen: list[int] = []
    digest, layers = fetch(backend.store, backend.store.stat(PLAIN), dest,
                           identities=parse_identities(key.identity_text), progress=seen.append)
    assert dest.read_bytes() == snap
    assert stat_mod.S_IMODE(dest.stat().st_mode) == 0o600
    assert digest.content_sha256 == snap[-32:].hex() and digest.size == len(snap)
    assert (layers.compressed, layers.encrypted) == (compress, encrypt)
    assert sum(seen) == len(raw)
    assert sorted(p.name for p in dest.parent.iterdir()) == [PLAIN]  # no .part left


def test_what_put_stores_the_clis_read(backend, snap, key):
    """``age -d -i key | zstd -d`` turns the stored zstd+age bytes back into the snapshot."""
    entry = _put(backend, snap, compress=True, encrypt=True, key=key)
    raw = backend.raw_read(entry.name.name)
    plain = _cli([require_binary("zstd"), "-d", "-c", "-q"],
                 _cli([require_binary("age"), "-d", "-i", str(key.identity_file)], raw))
    assert plain == snap


def test_compression_stores_fewer_bytes(backend, snap):
    entry = _put(backend, snap, compress=True)
    assert entry.size < len(snap) // 4


@pytest.mark.parametrize(("compress", "encrypt"), FORMATS, ids=FORMAT_IDS)
def test_put_reports_progress_of_every_stored_byte(backend, snap, key, compress, encrypt):
    seen: list[int] = []
    entry = _put(backend, snap, compress=compress, encrypt=encrypt, key=key, progress=seen.append)
    assert seen and all(n > 0 for n in seen)
    assert sum(seen) == entry.size == len(backend.raw_read(entry.name.name))


def test_list_is_newest_first_and_ignores_non_snapshots(backend, snap):
    times = [datetime(2026, 1, d, tzinfo=UTC) for d in (3, 1, 2)]
    for t in times:
        _put(backend, snap, plain=naming.snapshot_name(t), compress=True)
    _put(backend, snap, plain=naming.snapshot_name(datetime(2026, 1, 4, tzinfo=UTC), safety=True))
    for junk in ["README.md", "etcd-snapshot-bad.db", "etcd-snapshot-20260105T000000Z.db.part",
                 "etcd-snapshot-20260105T000000Z.db.1234abcd.part", "etcd-snapshot-20260105T000000Z.db.gz",
                 "etcd-snapshot-20260105T000000Z.db.age.zst", "homelab-2026-01-05T00:00:00Z.snap.part",
                 "homelab-2026-01-05T00:00:00.snap", "notes.snap", CATALOG_NAME]:
        backend.raw_write(junk, snap)
    got = backend.store.list()
    assert [e.name.name for e in got] == [
        "pre-restore-etcd-snapshot-20260104T000000Z.db",
        "etcd-snapshot-20260103T000000Z.db.zst",
        "etcd-snapshot-20260102T000000Z.db.zst",
        "etcd-snapshot-20260101T000000Z.db.zst",
    ]
    assert got[0].name.safety


def test_an_empty_or_missing_store_lists_nothing(backend):
    assert backend.store.list() == []
    with pytest.raises(SnapshotNotFound):
        backend.store.stat(PLAIN)


# --- a failed put leaves nothing -------------------------------------------------------------------------------


def _bad(snap: bytes, how: str) -> bytes:
    if how == "bad hash trailer":
        return snap[:-1] + bytes([snap[-1] ^ 1])
    if how == "damaged content":
        mid = len(snap) // 3
        return snap[:mid] + bytes([snap[mid] ^ 0xFF]) + snap[mid + 1:]
    if how == "truncated":
        return snap[:len(snap) - 700]
    if how == "trailer cut":
        return snap[:-32]
    if how == "empty":
        return b""
    if how == "not a snapshot":
        return b"\x7fELF" + b"\0" * (len(snap) - 4)
    raise AssertionError(how)


BAD = {"bad hash trailer": CorruptSnapshot, "damaged content": CorruptSnapshot, "truncated": TruncatedSnapshot,
       "trailer cut": TruncatedSnapshot, "empty": EmptySnapshot, "not a snapshot": NotASnapshot}


@pytest.mark.parametrize("how", list(BAD))
@pytest.mark.parametrize(("compress", "encrypt"), FORMATS, ids=FORMAT_IDS)
def test_a_bad_snapshot_is_never_stored(backend, snap, key, how, compress, encrypt):
    before_list, before_raw = backend.store.list(), backend.raw_names()
    with pytest.raises(BAD[how]):
        _put(backend, _bad(snap, how), compress=compress, encrypt=encrypt, key=key)
    assert backend.raw_names() == before_raw  # no object, no version, no pending upload, no .part
    assert backend.store.list() == before_list == []
    with pytest.raises(SnapshotNotFound):
        backend.store.stat(PLAIN)


def test_a_snapshot_that_is_not_the_expected_one_is_not_stored(backend, snap):
    with pytest.raises(IntegrityError, match="changed"):
        _put(backend, snap, expected_sha256="0" * 64)
    assert backend.raw_names() == []


def test_a_source_that_fails_mid_stream_leaves_nothing(backend, snap, key):
    class Gone(DRError):
        pass

    def source() -> Iterator[bytes]:
        yield from chunked(snap[: len(snap) // 2], 4096)
        raise Gone("node went away")

    with pytest.raises(Gone):
        backend.store.put(source(), PLAIN, compress=True, recipients=recipients([key.recipient]))
    assert backend.raw_names() == []


def test_a_non_snapshot_name_is_refused(backend, snap):
    with pytest.raises(ConfigError):
        _put(backend, snap, plain="backup.db")
    assert backend.raw_names() == []


@pytest.mark.slow
@pytest.mark.parametrize("how", ["good", "bad hash trailer"])
def test_a_multipart_sized_snapshot(backend, how):
    """Larger than one S3 part (8 MiB), incompressible: a multipart upload whose last part is refused must be
    aborted, and a good one must come back whole."""
    big = synthetic_snapshot((s3.PART_SIZE * 2 + 3 * 4096) // 4096, seed=3)
    data = big if how == "good" else _bad(big, how)
    if how == "good":
        entry = _put(backend, data, compress=True)
        dest = _out(backend) / PLAIN
        fetch(backend.store, backend.store.stat(PLAIN), dest)
        assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(big).digest()
        assert entry.size > s3.PART_SIZE
    else:
        with pytest.raises(CorruptSnapshot):
            _put(backend, data, compress=True)
        assert backend.raw_names() == []


# --- never overwrite -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("compress", "encrypt"), FORMATS, ids=FORMAT_IDS)
def test_put_never_overwrites_an_existing_name(backend, snap, key, compress, encrypt):
    first = _put(backend, snap, compress=compress, encrypt=encrypt, key=key)
    raw = backend.raw_read(first.name.name)
    names = backend.raw_names()
    other = synthetic_snapshot(3, seed=99)
    with pytest.raises(DRError, match="already exists") as ei:
        _put(backend, other, compress=compress, encrypt=encrypt, key=key)
    assert not isinstance(ei.value, IntegrityError)
    assert backend.raw_read(first.name.name) == raw
    assert backend.raw_names() == names  # no second version, no .part
    dest = _out(backend) / PLAIN
    fetch(backend.store, backend.store.stat(first.name.name), dest, identities=parse_identities(key.identity_text))
    assert dest.read_bytes() == snap


def test_put_does_not_overwrite_what_another_program_wrote(backend, snap):
    backend.raw_write(PLAIN, b"someone else's file")
    with pytest.raises(DRError, match="already exists"):
        _put(backend, snap)
    assert backend.raw_read(PLAIN) == b"someone else's file"


def test_fetch_does_not_overwrite_the_destination(backend, snap):
    _put(backend, snap)
    dest = _out(backend) / PLAIN
    dest.write_bytes(b"mine")
    with pytest.raises(DRError):
        fetch(backend.store, backend.store.stat(PLAIN), dest)
    assert dest.read_bytes() == b"mine"
    assert sorted(p.name for p in dest.parent.iterdir()) == [PLAIN]


# --- talos-backup's objects --------------------------------------------------------------------------------------


TB_NAME = "homelab-2026-11-24T05:04:05+02:00.snap"  # 03:04:05Z, as Go's time.RFC3339 writes local time


@pytest.mark.parametrize(("compress", "encrypt"), FORMATS, ids=FORMAT_IDS)
def test_talos_backup_objects_are_listed_with_the_time_from_their_name(backend, snap, key, compress, encrypt):
    """What talos-backup uploads (zstd, then age -r, named <cluster>-<RFC3339>.snap[.zst][.age]) is listed,
    stat'ed by either name, and fetched back to the exact snapshot."""
    data = snap
    if compress:
        data = _cli([require_binary("zstd"), "-c", "-q"], data)
    if encrypt:
        data = _cli([require_binary("age"), "-r", key.recipient], data)
    stored = naming.stored_name(TB_NAME, compressed=compress, encrypted=encrypt)
    backend.raw_write(stored, data)
    [e] = backend.store.list()
    assert e.name.name == stored and e.name.scheme == naming.TALOS_BACKUP
    assert e.name.taken_at == datetime(2026, 11, 24, 3, 4, 5, tzinfo=UTC)
    assert e.name.cluster == "homelab"
    assert e.format == naming.format_name(compress, encrypt)
    assert e.size == len(data)
    assert backend.store.stat(TB_NAME).name.name == stored
    dest = _out(backend) / TB_NAME
    digest, layers = fetch(backend.store, backend.store.stat(stored), dest,
                           identities=parse_identities(key.identity_text))
    assert dest.read_bytes() == snap
    assert (layers.compressed, layers.encrypted) == (compress, encrypt)


def test_talos_backup_and_dr_snapshots_sort_together_by_time(backend, snap):
    backend.raw_write("homelab-2026-11-24T06:00:00+02:00.snap", snap)  # 04:00Z
    backend.raw_write("homelab-2026-11-24T02:00:00Z.snap", snap)  # 02:00Z
    _put(backend, snap)  # 03:04:05Z
    assert [e.name.name for e in backend.store.list()] == [
        "homelab-2026-11-24T06:00:00+02:00.snap", PLAIN, "homelab-2026-11-24T02:00:00Z.snap"]


# --- fetch's refusals ------------------------------------------------------------------------------------------


def test_fetch_of_a_missing_entry_is_not_found(backend, snap):
    with pytest.raises(SnapshotNotFound):
        backend.store.stat("etcd-snapshot-20990101T000000Z.db")
    entry = _put(backend, snap)
    backend.raw_delete(entry.name.name)  # gone between listing and download
    dest = _out(backend) / PLAIN
    with pytest.raises(SnapshotNotFound):
        fetch(backend.store, entry, dest)
    assert list(dest.parent.iterdir()) == []


@pytest.mark.parametrize("compress", [False, True], ids=["age", "zstd+age"])
@pytest.mark.parametrize("which", ["no identity", "wrong identity"])
def test_fetch_of_an_encrypted_entry_without_its_identity(backend, snap, key, other_key, compress, which):
    _put(backend, snap, compress=compress, encrypt=True, key=key)
    ids = [] if which == "no identity" else parse_identities(other_key.identity_text)
    dest = _out(backend) / PLAIN
    with pytest.raises(SnapshotEncrypted) as ei:
        fetch(backend.store, backend.store.stat(PLAIN), dest, identities=ids)
    assert ei.value.exit_code == 23
    assert list(dest.parent.iterdir()) == []  # no file, no .part


@pytest.mark.parametrize(("compress", "encrypt"), FORMATS, ids=FORMAT_IDS)
def test_fetch_of_a_damaged_object_is_corrupt_and_leaves_nothing(backend, snap, key, compress, encrypt):
    entry = _put(backend, snap, compress=compress, encrypt=encrypt, key=key)
    raw = bytearray(backend.raw_read(entry.name.name))
    raw[len(raw) // 2] ^= 0x01
    backend.raw_delete(entry.name.name)
    backend.raw_write(entry.name.name, bytes(raw))
    dest = _out(backend) / PLAIN
    with pytest.raises(IntegrityError):
        fetch(backend.store, backend.store.stat(entry.name.name), dest, identities=parse_identities(key.identity_text))
    assert list(dest.parent.iterdir()) == []


# --- recorded verifications --------------------------------------------------------------------------------------


def test_record_verification_then_describe_and_stat_show_it(backend, snap):
    entry = _put(backend, snap, compress=True)
    assert backend.store.stat(PLAIN).verification is None
    v = Verification("2026-11-24T04:00:00Z", revision=42, keys=17, sha256=backend.verified_sha256(entry, snap))
    backend.store.record_verification(entry, v)
    for got in (backend.store.stat(PLAIN), backend.store.stat(entry.name.name),
                backend.store.describe(backend.store.list()[0])):
        assert got.verification is not None
        assert (got.verification.verified_at, got.verification.revision, got.verification.keys,
                got.verification.sha256) == (v.verified_at, 42, 17, v.sha256)


def test_a_verification_of_one_snapshot_is_not_another_ones(backend, snap):
    a = _put(backend, snap, plain=naming.snapshot_name(datetime(2026, 1, 1, tzinfo=UTC)))
    b = _put(backend, snap, plain=naming.snapshot_name(datetime(2026, 1, 2, tzinfo=UTC)))
    backend.store.record_verification(a, Verification("2026-01-03T00:00:00Z", sha256=backend.verified_sha256(a, snap)))
    assert backend.store.stat(a.name.name).verification is not None
    assert backend.store.stat(b.name.name).verification is None


# local: tied to the bytes, not to size and mtime


@pytest.fixture
def local(tmp_path, snap):
    store = LocalStore(tmp_path / "snapshots")
    entry = store.put(chunked(snap), PLAIN)
    v = Verification("2026-11-24T04:00:00Z", revision=3, keys=9, sha256=hashlib.sha256(entry.path.read_bytes()).hexdigest())
    store.record_verification(entry, v)
    assert store.stat(PLAIN).verification is not None
    return store, entry


def test_local_verification_stops_counting_when_the_bytes_change_even_with_size_and_mtime_restored(local):
    store, entry = local
    p = entry.path
    st = p.stat()
    data = bytearray(p.read_bytes())
    data[5000] ^= 0xFF
    p.chmod(0o600)
    with open(p, "r+b") as f:  # same inode, same size
        f.write(bytes(data))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (p.stat().st_size, p.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert store.stat(PLAIN).verification is None


def test_local_verification_stops_counting_when_the_file_is_replaced(local, snap):
    store, entry = local
    p = entry.path
    st = p.stat()
    other = synthetic_snapshot(len(snap) // 4096 - 1, seed=123)
    assert len(other) == len(snap)
    tmp = p.with_name("elsewhere")
    tmp.write_bytes(other)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, p)
    assert store.stat(PLAIN).verification is None


def test_local_verification_keeps_counting_after_chmod_or_a_same_bytes_copy(local):
    store, entry = local
    p = entry.path
    p.chmod(0o400)
    assert store.stat(PLAIN).verification is not None
    p.chmod(0o600)
    data = p.read_bytes()
    tmp = p.with_name("copy")
    tmp.write_bytes(data)
    os.replace(tmp, p)  # another inode, same bytes
    assert store.stat(PLAIN).verification is not None


def test_local_verification_of_other_bytes_than_the_files_does_not_count(tmp_path, snap):
    """The file changes between dr.verify's pass and the recording: the SHA-256 recorded is the old bytes', so the
    verification must not stand for the new ones (the catalog must not trust size, inode and ctime taken later)."""
    store = LocalStore(tmp_path / "snapshots")
    entry = store.put(chunked(snap), PLAIN)
    verified = hashlib.sha256(entry.path.read_bytes()).hexdigest()
    data = bytearray(entry.path.read_bytes())
    data[5000] ^= 0xFF
    with open(entry.path, "r+b") as f:
        f.write(bytes(data))
    store.record_verification(entry, Verification("2026-11-24T04:00:00Z", sha256=verified))
    assert store.stat(PLAIN).verification is None, (
        "a verification recorded with the SHA-256 of bytes the file no longer holds counts for the new bytes: "
        "record_verification stores the inode and ctime it sees at recording time, and describe then skips the hash")


def test_local_verification_with_the_stat_from_before_hashing(tmp_path, snap):
    """dr.verify passes the stat taken before it hashed: unchanged bytes keep counting without a re-hash, bytes
    changed after that stat (same size, mtime put back) do not count."""
    store = LocalStore(tmp_path / "snapshots")
    entry = store.put(chunked(snap), PLAIN)
    before = os.stat(entry.path)
    verified = hashlib.sha256(entry.path.read_bytes()).hexdigest()
    store.record_verification(entry, Verification("2026-11-24T04:00:00Z", sha256=verified), stat_before=before)
    assert store.stat(PLAIN).verification is not None
    data = bytearray(entry.path.read_bytes())
    data[5000] ^= 0xFF
    with open(entry.path, "r+b") as f:
        f.write(bytes(data))
    os.utime(entry.path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert store.stat(PLAIN).verification is None


def test_local_catalog_forgets_files_that_are_gone(local, snap):
    store, entry = local
    other = store.put(chunked(snap), naming.snapshot_name(datetime(2026, 1, 1, tzinfo=UTC)))
    entry.path.unlink()
    store.record_verification(other, Verification("x", sha256=hashlib.sha256(other.path.read_bytes()).hexdigest()))
    assert store.record_details(PLAIN) == {}
    assert store.record_details(other.name.name)["sha256"]


def test_local_files_are_private(tmp_path, snap, key):
    store = LocalStore(tmp_path / "snapshots")
    e = store.put(chunked(snap), PLAIN, compress=True, recipients=recipients([key.recipient]))
    assert stat_mod.S_IMODE(e.path.stat().st_mode) == 0o600
    store.record_verification(e, Verification("x", sha256="0" * 64))
    assert stat_mod.S_IMODE((store.root / CATALOG_NAME).stat().st_mode) == 0o600


def test_local_store_ignores_symlinks_and_folders(tmp_path, snap):
    store = LocalStore(tmp_path / "snapshots")
    store.put(chunked(snap), PLAIN)
    (store.root / "etcd-snapshot-20260101T000000Z.db").symlink_to(store.root / PLAIN)
    (store.root / "etcd-snapshot-20260102T000000Z.db").mkdir()
    assert [e.name.name for e in store.list()] == [PLAIN]


# S3: tags belong to the bytes they verified


def test_s3_verification_of_other_bytes_than_the_recorded_does_not_count(s3_client, bucket, snap):
    store = S3Store(s3_client, bucket, PREFIX)
    entry = store.put(chunked(snap), PLAIN, compress=True)
    assert store.stat(PLAIN).sha256 == snap[-32:].hex()  # recorded (a tag, since a streamed upload learns it last)
    store.record_verification(entry, Verification("2026-11-24T04:00:00Z", revision=1, keys=2, sha256="ab" * 32))
    assert store.stat(PLAIN).verification is None
    store.record_verification(entry, Verification("2026-11-24T05:00:00Z", revision=1, keys=2,
                                                  sha256=snap[-32:].hex()))
    v = store.stat(PLAIN).verification
    assert v is not None and v.verified_at == "2026-11-24T05:00:00Z"


def test_s3_verification_does_not_follow_a_replaced_object(s3_client, bucket, snap):
    store = S3Store(s3_client, bucket, PREFIX)
    entry = store.put(chunked(snap), PLAIN)
    store.record_verification(entry, Verification("2026-11-24T04:00:00Z", sha256=snap[-32:].hex()))
    assert store.stat(PLAIN).verification is not None
    s3_client.put_object(Bucket=bucket, Key=PREFIX + PLAIN, Body=synthetic_snapshot(3, seed=5))  # a new version
    assert store.stat(PLAIN).verification is None


def test_s3_put_records_format_size_and_sha256(s3_client, bucket, snap, key):
    store = S3Store(s3_client, bucket, PREFIX)
    meta = s3.snapshot_metadata(sha256=snap[-32:].hex(), size=len(snap), taken_at=TS, cluster="c1", revision=5)
    e = store.put(chunked(snap), PLAIN, compress=True, recipients=recipients([key.recipient]), metadata=meta)
    info = s3.head_snapshot(s3_client, bucket, e.key)
    assert info.metadata[s3.META_FORMAT] == "zstd+age"
    assert info.metadata[s3.META_SHA256] == snap[-32:].hex()
    assert info.metadata[s3.META_SIZE] == str(len(snap))
    st = store.stat(PLAIN)
    assert (st.sha256, st.plain_size, st.cluster, st.revision) == (snap[-32:].hex(), len(snap), "c1", 5)


@pytest.mark.parametrize("what", ["sha256", "size"])
def test_s3_fetch_refuses_an_object_that_is_not_the_one_recorded(s3_client, bucket, snap, tmp_path, what):
    """A valid snapshot under a name whose metadata records another one's SHA-256 (or size): refused, nothing left."""
    store = S3Store(s3_client, bucket, PREFIX)
    meta = ({s3.META_SHA256: "cd" * 32} if what == "sha256" else {s3.META_SIZE: str(len(snap) + 512)})
    s3_client.put_object(Bucket=bucket, Key=PREFIX + PLAIN, Body=snap, Metadata=meta)
    dest = tmp_path / "out" / PLAIN
    dest.parent.mkdir()
    with pytest.raises(CorruptSnapshot, match="recorded"):
        fetch(store, store.stat(PLAIN), dest)
    assert list(dest.parent.iterdir()) == []


def test_s3_store_ignores_keys_outside_its_prefix_and_folder_markers(s3_client, bucket, snap):
    store = S3Store(s3_client, bucket, PREFIX)
    s3_client.put_object(Bucket=bucket, Key="other/" + PLAIN, Body=snap)
    s3_client.put_object(Bucket=bucket, Key=PREFIX, Body=b"")
    assert store.list() == []


# --- find ------------------------------------------------------------------------------------------------------


def _entry(name: str, modified: datetime = TS) -> Entry:
    return Entry("local", naming.parse(name), name, 1, modified)


def test_find_prefers_the_stored_name_then_the_newest_plain_match():
    a = _entry(PLAIN)
    b = _entry(PLAIN + ".zst", datetime(2026, 12, 1, tzinfo=UTC))
    c = _entry(PLAIN + ".zst.age", datetime(2026, 12, 2, tzinfo=UTC))
    with pytest.raises(ConfigError):  # hostile-inputs 22: `X.db` beside `X.db.zst` is ambiguous, not a guess
        find([b, c, a], PLAIN)
    assert find([a], PLAIN) is a
    assert find([b, c], PLAIN) is c
    assert find([a, b, c], PLAIN + ".zst") is b
    assert find([a, b, c], "snapshots/" + PLAIN + ".zst") is b
    assert find([a, b, c], "etcd-snapshot-20990101T000000Z.db") is None
    assert find([], PLAIN) is None
    assert newest_first([a, b, c])[0] is c


def test_stat_by_plain_name_sees_what_was_put_after_a_listing(backend, snap):
    """restic's rule: what Save returned, Stat finds; an earlier List must not hide it."""
    assert backend.store.list() == []
    _put(backend, snap, compress=True)
    assert backend.store.stat(PLAIN).name.name == PLAIN + ".zst"
    backend.raw_delete(PLAIN + ".zst")
    with pytest.raises(SnapshotNotFound):
        backend.store.stat(PLAIN)
