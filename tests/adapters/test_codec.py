"""dr.adapters.codec against Debian's real age and zstd CLIs: what encode writes, ``age -d -i key | zstd -d`` turns
back into the exact snapshot; what ``zstd | age -r`` writes (siderolabs/talos-backup's order), decode reads. A missing
key is "encrypted" (exit 23), never "corrupt"; damage is "corrupt"; a failing source or sink comes out as itself;
memory stays bounded however well the data compresses."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from backports import zstd

from dr.adapters import codec
from dr.core.age_keys import parse_identities, recipients
from dr.core.errors import (
    CorruptSnapshot,
    ExitCode,
    IntegrityError,
    NodeUnreachable,
    NotASnapshot,
    S3Error,
    SnapshotEncrypted,
)
from dr.core.integrity import CHUNK
from tests.support.snapshots import age_keygen, chunked, synthetic_snapshot
from tests.support.tools import ROOT, require_binary

LAYERS = [(False, False), (True, False), (False, True), (True, True)]
LAYER_IDS = ["plain", "zstd", "age", "zstd+age"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("age")
    return [age_keygen(d, f"key{i}.txt") for i in range(3)]


@pytest.fixture(scope="module")
def snap():
    """Incompressible content, larger than three age payload chunks (64 KiB each)."""
    return synthetic_snapshot(80, seed=1)


@pytest.fixture(scope="module")
def mixed_snap():
    """Some random pages, then mostly free (zeroed) pages, as a real bbolt file is."""
    body = synthetic_snapshot(8, seed=2)[:-32] + b"\0" * (200 * 4096)
    return body + hashlib.sha256(body).digest()


def _cli(argv: list[str], data: bytes) -> bytes:
    proc = subprocess.run(argv, input=data, capture_output=True)
    assert proc.returncode == 0, f"{argv[0]} failed: {proc.stderr.decode(errors='replace')}"
    return proc.stdout


def _zstd_d(data: bytes) -> bytes:
    return _cli([require_binary("zstd"), "-d", "-c", "-q"], data)


def _age_d(data: bytes, key) -> bytes:
    return _cli([require_binary("age"), "-d", "-i", str(key.identity_file)], data)


def _encode(data: bytes, *, compress: bool, recips=(), chunk: int = 65536) -> bytes:
    out: list[bytes] = []
    codec.encode(chunked(data, chunk), out.append, compress=compress, recipients=recips)
    return b"".join(out)


def _decode(blob: bytes, identities=(), chunk: int = 65536) -> tuple[bytes, codec.Layers]:
    out: list[bytes] = []
    layers = codec.decode(chunked(blob, chunk), out.append, identities=identities)
    return b"".join(out), layers


# --- what encode writes, the CLIs read --------------------------------------------------------------------------


@pytest.mark.parametrize(("compress", "encrypt"), LAYERS, ids=LAYER_IDS)
def test_cli_reads_what_encode_writes(mixed_snap, keys, compress, encrypt):
    blob = _encode(mixed_snap, compress=compress, recips=recipients([keys[0].recipient]) if encrypt else ())
    if not compress and not encrypt:
        assert blob == mixed_snap
    if compress and not encrypt:
        assert len(blob) < len(mixed_snap) // 4  # free pages compress
    if encrypt:
        assert blob.startswith(b"age-encryption.org/v1\n")
        assert mixed_snap[4096:4096 + 64] not in blob
    plain = _age_d(blob, keys[0]) if encrypt else blob
    plain = _zstd_d(plain) if compress else plain
    assert plain == mixed_snap


def test_every_recipient_can_decrypt_with_the_cli(snap, keys):
    blob = _encode(snap, compress=True, recips=recipients([keys[0].recipient, keys[1].recipient]))
    for k in keys[:2]:
        assert _zstd_d(_age_d(blob, k)) == snap
    proc = subprocess.run([require_binary("age"), "-d", "-i", str(keys[2].identity_file)], input=blob,
                          capture_output=True)
    assert proc.returncode != 0  # not one of the recipients


# --- what the CLIs write (as talos-backup does), decode reads ----------------------------------------------------


def _cli_encode(data: bytes, key, *, compress: bool, encrypt: bool, armor: bool = False) -> bytes:
    if compress:
        data = _cli([require_binary("zstd"), "-c", "-q"], data)
    if encrypt:
        data = _cli([require_binary("age"), *(["-a"] if armor else []), "-r", key.recipient], data)
    return data


@pytest.mark.parametrize("chunk", [65536, 1, 7], ids=["64k", "1-byte", "7-byte"])
@pytest.mark.parametrize(("compress", "encrypt"), LAYERS, ids=LAYER_IDS)
def test_decode_reads_what_the_clis_write(mixed_snap, keys, compress, encrypt, chunk):
    data = mixed_snap if chunk == 65536 else mixed_snap[:4096 * 3 - 32] + mixed_snap[-32:]  # small for tiny chunks
    blob = _cli_encode(data, keys[0], compress=compress, encrypt=encrypt)
    plain, layers = _decode(blob, parse_identities(keys[0].identity_text), chunk=chunk)
    assert plain == data
    assert (layers.compressed, layers.encrypted) == (compress, encrypt)


def test_decode_reads_armored_age(snap, keys):
    blob = _cli_encode(snap, keys[1], compress=True, encrypt=True, armor=True)
    assert blob.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    plain, layers = _decode(blob, parse_identities(keys[1].identity_text))
    assert plain == snap and layers.encrypted and layers.compressed


def test_decode_finds_the_identity_among_several(snap, keys):
    blob = _cli_encode(snap, keys[2], compress=True, encrypt=True)
    ids = parse_identities(keys[0].identity_text + keys[1].identity_text + keys[2].identity_text)
    assert _decode(blob, ids)[0] == snap


def test_decode_reads_concatenated_zstd_frames(snap):
    """RFC 8878: a zstd stream is one or more frames; `zstd -d` reads `cat a.zst b.zst`."""
    half = len(snap) // 2
    blob = zstd.compress(snap[:half]) + zstd.compress(snap[half:])
    assert _zstd_d(blob) == snap
    assert _decode(blob)[0] == snap


def test_round_trip_through_pyrage_and_zstd_layers_only(snap, keys):
    """encode then decode, and the layers decode reports are read from the content alone."""
    for compress, encrypt in LAYERS:
        blob = _encode(snap, compress=compress, recips=recipients([keys[0].recipient]) if encrypt else ())
        plain, layers = _decode(blob, parse_identities(keys[0].identity_text))
        assert plain == snap
        assert layers.format == {(False, False): "plain", (True, False): "zstd", (False, True): "age",
                                 (True, True): "zstd+age"}[(compress, encrypt)]


@pytest.mark.slow
def test_real_etcdctl_snapshot_round_trips_both_ways(real_snapshot, keys):
    data = real_snapshot.read_bytes()
    blob = _encode(data, compress=True, recips=recipients([keys[0].recipient]))
    assert _zstd_d(_age_d(blob, keys[0])) == data
    blob = _cli_encode(data, keys[0], compress=True, encrypt=True)
    assert _decode(blob, parse_identities(keys[0].identity_text)) == (data, codec.Layers(True, True))


# --- a missing key is "encrypted", never "corrupt" ---------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["age", "zstd+age"])
@pytest.mark.parametrize("which", ["no identity", "wrong identity"])
def test_without_the_right_identity_it_is_encrypted_not_corrupt(snap, keys, compress, which):
    blob = _cli_encode(snap, keys[0], compress=compress, encrypt=True)
    ids = [] if which == "no identity" else parse_identities(keys[1].identity_text + keys[2].identity_text)
    written: list[bytes] = []
    with pytest.raises(SnapshotEncrypted) as ei:
        codec.decode(chunked(blob), written.append, identities=ids, label="s3://b/x.snap.zst.age")
    assert not isinstance(ei.value, IntegrityError)
    assert ei.value.exit_code == ExitCode.ENCRYPTED == 23
    assert "encrypted" in ei.value.message and "corrupt" not in str(ei.value).lower()
    assert "s3://b/x.snap.zst.age" in ei.value.message
    assert written == []  # no plaintext, and no ciphertext passed off as plaintext


def test_without_identity_the_hint_names_the_flag(snap, keys):
    blob = _cli_encode(snap, keys[0], compress=False, encrypt=True, armor=True)
    with pytest.raises(SnapshotEncrypted) as ei:
        codec.decode([blob], [].append)
    assert "--identity" in (ei.value.hint or "")


# --- damage is "corrupt" -----------------------------------------------------------------------------------------


def _age_blob(snap, key) -> bytes:
    return _cli_encode(snap, key, compress=True, encrypt=True)


def _header_end(blob: bytes) -> int:
    return blob.index(b"\n--- ") + 1


@pytest.mark.parametrize("damage", [
    "cut inside the header", "cut after the header", "cut in the payload", "last byte cut", "one payload chunk only",
    "payload bit flipped", "last byte flipped", "header MAC flipped", "garbage appended",
])
def test_damaged_age_ciphertext_is_corrupt(snap, keys, damage):
    blob = bytearray(_age_blob(snap, keys[0]))
    h = _header_end(blob)
    damaged = {
        "cut inside the header": lambda: blob[:h - 10],
        "cut after the header": lambda: blob[:h + 60],
        "cut in the payload": lambda: blob[:len(blob) // 2],
        "last byte cut": lambda: blob[:-1],
        "one payload chunk only": lambda: blob[:h + 60 + 16 + 65536 + 16],
        "payload bit flipped": lambda: blob[:len(blob) // 2] + bytes([blob[len(blob) // 2] ^ 1])
        + blob[len(blob) // 2 + 1:],
        "last byte flipped": lambda: blob[:-1] + bytes([blob[-1] ^ 0x80]),
        "header MAC flipped": lambda: blob[:h + 4] + (b"A" if blob[h + 4:h + 5] != b"A" else b"B") + blob[h + 5:],
        "garbage appended": lambda: blob + b"garbage",
    }[damage]()
    assert len(snap) > 3 * 65536  # so the cuts fall where their names say
    with pytest.raises(CorruptSnapshot) as ei:
        codec.decode(chunked(bytes(damaged)), lambda _b: None, identities=parse_identities(keys[0].identity_text))
    assert ei.value.exit_code == ExitCode.CORRUPT_SNAPSHOT
    # the age CLI agrees that it is damaged
    proc = subprocess.run([require_binary("age"), "-d", "-i", str(keys[0].identity_file)], input=bytes(damaged),
                          capture_output=True)
    assert proc.returncode != 0


def _zstd_blob(data: bytes) -> bytes:
    return _cli([require_binary("zstd"), "-c", "-q"], data)


@pytest.mark.parametrize("damage", ["bit flipped", "garbage appended", "frame cut in half", "checksum cut",
                                    "frame cut inside age"])
def test_broken_zstd_is_corrupt(mixed_snap, keys, damage):
    z = bytearray(_zstd_blob(mixed_snap))
    damaged = {
        "bit flipped": lambda: z[:len(z) // 2] + bytes([z[len(z) // 2] ^ 0x10]) + z[len(z) // 2 + 1:],
        "garbage appended": lambda: z + b"\x00garbage-after-the-frame",
        "frame cut in half": lambda: z[:len(z) // 2],
        "checksum cut": lambda: z[:-4],
        "frame cut inside age": lambda: z[:len(z) // 2],
    }[damage]()
    # `zstd -d` refuses every one of these
    proc = subprocess.run([require_binary("zstd"), "-d", "-c", "-q"], input=bytes(damaged), capture_output=True)
    assert proc.returncode != 0, damage
    ids = ()
    if damage == "frame cut inside age":
        damaged = _cli([require_binary("age"), "-r", keys[0].recipient], bytes(damaged))
        ids = parse_identities(keys[0].identity_text)
    try:
        codec.decode(chunked(bytes(damaged)), lambda _b: None, identities=ids)
    except CorruptSnapshot as exc:
        assert "zstd" in exc.message
    else:
        pytest.fail(f"codec.decode accepted a zstd stream that `zstd -d` refuses ({damage}): python-zstandard's "
                    "stream_writer does not report an unfinished frame at the end of the input, so a truncated "
                    "zstd layer decodes 'successfully' to a short plaintext instead of raising CorruptSnapshot")


def test_age_inside_age_is_not_a_snapshot(snap, keys):
    once = _cli_encode(snap, keys[0], compress=False, encrypt=True)
    twice = _cli([require_binary("age"), "-r", keys[0].recipient], once)
    with pytest.raises(NotASnapshot, match="twice"):
        codec.decode(chunked(twice), lambda _b: None, identities=parse_identities(keys[0].identity_text))


# --- a failing source or sink comes out as itself ----------------------------------------------------------------


class Boom(Exception):
    pass


def _failing_source(data: bytes, exc: BaseException, after: int = 3):
    for i, c in enumerate(chunked(data, 4096)):
        if i == after:
            raise exc
        yield c


@pytest.mark.parametrize("make_exc", [lambda: Boom("source"), lambda: NodeUnreachable("node went away"),
                                      lambda: KeyboardInterrupt()], ids=["plain-exc", "DRError", "Ctrl-C"])
@pytest.mark.parametrize(("compress", "encrypt"), LAYERS, ids=LAYER_IDS)
def test_encode_source_exception_comes_out_as_itself(snap, keys, compress, encrypt, make_exc):
    exc = make_exc()
    with pytest.raises(type(exc)) as ei:
        codec.encode(_failing_source(snap, exc), lambda _b: None, compress=compress,
                     recipients=recipients([keys[0].recipient]) if encrypt else ())
    assert ei.value is exc


@pytest.mark.parametrize("make_exc", [lambda: Boom("sink"), lambda: S3Error("upload failed"),
                                      lambda: KeyboardInterrupt()], ids=["plain-exc", "DRError", "Ctrl-C"])
@pytest.mark.parametrize(("compress", "encrypt"), LAYERS, ids=LAYER_IDS)
def test_encode_sink_exception_comes_out_as_itself(snap, keys, compress, encrypt, make_exc):
    exc = make_exc()

    def write(_b: bytes) -> None:
        raise exc

    with pytest.raises(type(exc)) as ei:
        codec.encode(chunked(snap), write, compress=compress,
                     recipients=recipients([keys[0].recipient]) if encrypt else ())
    assert ei.value is exc


@pytest.mark.parametrize("make_exc", [lambda: Boom("source"), lambda: S3Error("connection reset"),
                                      lambda: KeyboardInterrupt()], ids=["plain-exc", "DRError", "Ctrl-C"])
@pytest.mark.parametrize(("compress", "encrypt"), LAYERS, ids=LAYER_IDS)
def test_decode_source_exception_comes_out_as_itself(snap, keys, compress, encrypt, make_exc):
    blob = _cli_encode(snap, keys[0], compress=compress, encrypt=encrypt)
    exc = make_exc()
    with pytest.raises(type(exc)) as ei:
        codec.decode(_failing_source(blob, exc, after=2), lambda _b: None,
                     identities=parse_identities(keys[0].identity_text))
    assert ei.value is exc


@pytest.mark.parametrize("make_exc", [lambda: Boom("sink"), lambda: OSError(28, "No space left on device"),
                                      lambda: KeyboardInterrupt()], ids=["plain-exc", "ENOSPC", "Ctrl-C"])
@pytest.mark.parametrize(("compress", "encrypt"), LAYERS, ids=LAYER_IDS)
def test_decode_sink_exception_comes_out_as_itself(snap, keys, compress, encrypt, make_exc):
    blob = _cli_encode(snap, keys[0], compress=compress, encrypt=encrypt)
    exc = make_exc()
    calls = [0]

    def write(_b: bytes) -> None:
        calls[0] += 1
        if calls[0] == 2:
            raise exc

    with pytest.raises(type(exc)) as ei:
        codec.decode(chunked(blob), write, identities=parse_identities(keys[0].identity_text))
    assert ei.value is exc


# --- memory stays bounded however well the data compresses --------------------------------------------------------

GIB = 1 << 30


@pytest.fixture(scope="module")
def zeros_zst(tmp_path_factory) -> Path:
    """1 GiB of zeros as the zstd CLI compresses it (a few tens of KiB)."""
    out = tmp_path_factory.mktemp("zeros") / "zeros.zst"
    with open(out, "wb") as f:
        subprocess.run(f"head -c {GIB} /dev/zero | {require_binary('zstd')} -c -q", shell=True, stdout=f, check=True)
    assert out.stat().st_size < 1 << 20
    return out


@pytest.mark.slow
@pytest.mark.parametrize("encrypt", [False, True], ids=["zstd", "zstd+age"])
def test_decompressing_1gib_of_zeros_writes_bounded_pieces(zeros_zst, keys, encrypt):
    blob = zeros_zst.read_bytes()
    if encrypt:
        blob = _cli([require_binary("age"), "-r", keys[0].recipient], blob)
    total, biggest = [0], [0]

    def write(b: bytes) -> None:
        total[0] += len(b)
        biggest[0] = max(biggest[0], len(b))
        assert not b.strip(b"\0")

    layers = codec.decode([blob], write, identities=parse_identities(keys[0].identity_text))  # ONE input piece
    assert total[0] == GIB
    assert biggest[0] <= CHUNK, f"a write() of {biggest[0]} bytes: decompression output is not bounded"
    assert layers == codec.Layers(encrypted=encrypt, compressed=True)


_RSS_CHILD = textwrap.dedent("""
    import sys
    from dr.adapters import codec
    from dr.core.age_keys import parse_identities

    def status(field):  # KiB
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])

    blob = open(sys.argv[1], "rb").read()
    ids = parse_identities(open(sys.argv[2]).read())
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    before = status("VmRSS")
    n = [0]
    def write(b):
        n[0] += len(b)
    codec.decode([blob], write, identities=ids)
    print(n[0], status("VmHWM") - before)
""")


@pytest.mark.slow
def test_peak_rss_stays_flat_decoding_1gib_of_zeros(zeros_zst, keys, tmp_path):
    enc = tmp_path / "zeros.zst.age"
    enc.write_bytes(_cli([require_binary("age"), "-r", keys[0].recipient], zeros_zst.read_bytes()))
    proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(enc), str(keys[0].identity_file)], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    n, growth_kib = map(int, proc.stdout.split())
    assert n == GIB
    assert growth_kib < 64 * 1024, f"peak RSS grew by {growth_kib // 1024} MiB decoding 1 GiB of zeros"


def test_encode_pieces_are_bounded_for_a_big_compressible_input(keys):
    """The other direction: 64 MiB of zeros in 8 MiB pieces, compressed and encrypted; no piece held whole."""
    biggest = [0]

    def write(b: bytes) -> None:
        biggest[0] = max(biggest[0], len(b))

    codec.encode((b"\0" * (8 << 20) for _ in range(8)), write, compress=True,
                 recipients=recipients([keys[0].recipient]))
    assert biggest[0] <= CHUNK


def test_zstd_default_level_and_checksum(snap):
    blob = _encode(snap, compress=True)
    # RFC 8878 3.1.1.1.1: bit 2 of the frame header descriptor (the byte after the magic) is the checksum flag
    assert blob[4] & 0x04  # a frame damaged at rest fails zstd's own check too
