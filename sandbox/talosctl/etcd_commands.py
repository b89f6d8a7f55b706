"""The etcd commands: ``etcd snapshot`` (streamed to ``PATH.part`` 0600, checked, renamed) and ``etcd alarm list``."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from pathlib import Path

from sandbox import etcd
from sandbox.node import NodeError, SnapshotHangs, TransportError
from sandbox.talosctl.client import CommandError, _rpc, target
from sandbox.talosctl.flags import UsageError
from sandbox.talosctl.status import _tab


def cmd_etcd_alarm(values: dict, args: list[str]) -> None:
    """``talosctl etcd alarm list`` (cmd/talosctl/cmd/talos/etcd.go:50-108): a tabwriter(0,0,3,' ') table
    ``MEMBER ALARM``, with ``NODE`` first when the answer carries a hostname (apid forwards every ``nodes`` call on
    a control plane, so it does), member ids as ``%016x`` (resources/etcd/etcd.go:21-23); nothing without alarms."""
    if args[0] != "list":
        raise UsageError(f'unknown command "{args[0]}" for "talosctl etcd alarm" (the sandbox has list)')
    t = target(values, insecure=False)
    try:
        alarms = t.node.etcd_alarms(t.addr, t.auth, node=t.md)
    except (NodeError, TransportError) as exc:
        raise _rpc("error getting alarms", exc, t) from None
    if not alarms:
        return
    rows: list[tuple[str, ...]] = [("NODE", "MEMBER", "ALARM") if t.md else ("MEMBER", "ALARM")]
    for member, alarm in alarms:
        row = (f"{member:016x}", alarm)
        rows.append((t.shown, *row) if t.md else row)
    print(_tab(rows))


def _stream_chunks(src: Path, faults: dict):
    """Yield the snapshot as the node streams it, with injected faults."""
    data = src.read_bytes()
    if faults.get("snapshot_corrupt") and data:
        mid = len(data) // 2
        data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]
    cut = int(faults.get("snapshot_truncate_bytes") or 0)
    if cut:
        data = data[: max(0, len(data) - cut)]
    die_at = len(data) // 2 if faults.get("die_mid_snapshot") else None
    delay = float(faults.get("snapshot_delay_seconds") or 0)
    if delay:
        time.sleep(delay)
    bps = int(faults.get("snapshot_throttle_bytes_per_second") or 0)
    chunk = 64 * 1024 if not bps else max(1, min(64 * 1024, bps // 10))
    pos = 0
    while pos < len(data):
        end = min(len(data), pos + chunk)
        if die_at is not None and end >= die_at:
            yield data[pos:die_at]
            raise NodeError("Unavailable", "error reading from server: EOF")
        yield data[pos:end]
        if bps:
            time.sleep((end - pos) / bps)
        pos = end


class _Aborted(Exception):
    pass


def _hang_until_signalled(limit: float = 3600.0) -> None:
    """What talosctl does while the node's etcd client waits for an etcd that is down: nothing, until SIGINT or
    SIGTERM cancels the context (pkg/cli/context.go prints the notice; tests/golden/talosctl/etcd-snapshot-etcd-down.txt).
    The cancelled stream ends as EOF, so talosctl then reports an empty snapshot (client.go ReadStream)."""

    def abort(signum, frame):
        raise _Aborted

    signal.signal(signal.SIGTERM, abort)
    signal.signal(signal.SIGINT, abort)
    try:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            time.sleep(0.2)
    except _Aborted:
        print("Signal received, aborting, press Ctrl+C once again to abort immediately...", file=sys.stderr)


def cmd_etcd_snapshot(values: dict, args: list[str]) -> None:
    dest = Path(args[0])
    part = Path(str(dest) + ".part")
    t = target(values, insecure=False)
    server_tmp = t.node.paths.node / "tmp" / f"snapshot-{os.getpid()}-{uuid.uuid4().hex[:8]}.db"
    server_tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as exc:
            raise CommandError(f"failed to open file: {exc}") from None
        n = 0
        with os.fdopen(fd, "wb") as out:
            try:
                t.node.prepare_snapshot(t.addr, t.auth, server_tmp, node=t.md)
            except (NodeError, TransportError) as exc:
                raise _rpc("error reading file", exc) from None
            except SnapshotHangs:
                _hang_until_signalled()  # then, like talosctl, a cancelled stream reads as an empty file
                raise CommandError("sha256 checksum not found (size 0)") from None
            try:
                for chunk in _stream_chunks(server_tmp, t.node.faults()):
                    out.write(chunk)
                    n += len(chunk)
            except NodeError as exc:
                raise _rpc("error reading snapshot", exc) from None
            out.flush()
            os.fsync(out.fileno())
        if n % 512 != 32:
            raise CommandError(f"sha256 checksum not found (size {n})")
        os.replace(part, dest)
        print(f'etcd snapshot saved to "{dest}" ({n} bytes)')
        try:
            st = etcd.snapshot_status(dest)
        except etcd.EtcdFailure as exc:
            raise CommandError(f"failed to read snapshot status: {exc}") from None
        print(
            f"snapshot info: hash {st['hash']:08x}, revision {st['revision']}, total keys {st['totalKey']}, "
            f"total size {st['totalSize']}"
        )
    finally:
        part.unlink(missing_ok=True)
        server_tmp.unlink(missing_ok=True)
