import shutil

import pytest

from dr.core import errors
from dr.core.integrity import verify_file


def test_real_etcdctl_snapshot_verifies(real_snapshot):
    d = verify_file(real_snapshot)
    assert d.size == real_snapshot.stat().st_size
    assert d.size % 512 == 32
    assert d.content_sha256 == real_snapshot.read_bytes()[-32:].hex()


@pytest.mark.parametrize(
    "mangle, exc, code",
    [
        (lambda b: b"", errors.EmptySnapshot, errors.ExitCode.EMPTY_SNAPSHOT),
        (lambda b: b[:-100], errors.TruncatedSnapshot, errors.ExitCode.TRUNCATED_SNAPSHOT),
        (lambda b: b[: len(b) // 2] + bytes([b[len(b) // 2] ^ 1]) + b[len(b) // 2 + 1 :], errors.CorruptSnapshot,
         errors.ExitCode.CORRUPT_SNAPSHOT),
        (lambda b: b"hello world, not a snapshot\n" * 100, errors.NotASnapshot, errors.ExitCode.NOT_A_SNAPSHOT),
        (lambda b: b[:-32] + bytes(32), errors.CorruptSnapshot, errors.ExitCode.CORRUPT_SNAPSHOT),
    ],
    ids=["empty", "truncated", "flipped-byte", "foreign", "zeroed-trailer"],
)
def test_bad_snapshots_each_get_their_error(real_snapshot, tmp_path, mangle, exc, code):
    bad = tmp_path / "bad.db"
    bad.write_bytes(mangle(real_snapshot.read_bytes()))
    with pytest.raises(exc) as info:
        verify_file(bad)
    assert info.value.exit_code == code
    assert str(bad) in str(info.value)


def test_chunk_boundaries_do_not_matter(real_snapshot, tmp_path):
    from dr.core.integrity import verify_stream

    data = real_snapshot.read_bytes()
    for size in (1, 7, 31, 32, 33, 4096):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        assert verify_stream(chunks).content_sha256 == data[-32:].hex()
    shutil.copy(real_snapshot, tmp_path / "x")


def test_whole_file_digest_is_the_sha256_of_every_byte(real_snapshot):
    import hashlib

    d = verify_file(real_snapshot)
    assert d.file_sha256 == hashlib.sha256(real_snapshot.read_bytes()).hexdigest()
