"""The etcd commands: ``etcd snapshot`` (streamed to ``PATH.part`` 0600, checked, renamed), ``etcd alarm list``, and
the membership commands of cmd/talosctl/cmd/talos/etcd.go: ``etcd members``, ``etcd remove-member``, ``etcd leave``,
``etcd status``."""

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


def cmd_etcd_members(values: dict, args: list[str]) -> None:
    """``talosctl etcd members`` (etcd.go:205-265): EtcdMemberList with QueryLocal; a tabwriter(0,0,3,' ') table
    ``NODE ID HOSTNAME PEER URLS CLIENT URLS LEARNER`` (NODE: apid forwards every `nodes` call, so the answer names
    the node), ids as ``%016x``."""
    t = target(values, insecure=False)
    try:
        members = t.node.etcd_members(t.addr, t.auth, node=t.md)
    except (NodeError, TransportError) as exc:
        raise _rpc("error getting members", exc, t) from None
    except SnapshotHangs:
        _hang_until_signalled()  # then the cancelled call's own error
        raise CommandError("error getting members: rpc error: code = Canceled desc = context canceled") from None
    head = ("ID", "HOSTNAME", "PEER URLS", "CLIENT URLS", "LEARNER")
    rows: list[tuple[str, ...]] = [("NODE", *head) if t.md else head]
    for m in members:
        row = (f"{m['id']:016x}", m["name"], ",".join(m["peer_urls"]), ",".join(m["client_urls"]),
               str(m["is_learner"]).lower())
        rows.append((t.shown, *row) if t.md else row)
    print(_tab(rows))


def _parse_member_id(text: str) -> int:
    """etcdresource.ParseMemberID: a hex id (``strconv.ParseUint(s, 16, 64)``)."""
    try:
        value = int(text, 16)
    except ValueError:
        value = -1
    if not 0 <= value < 1 << 64 or text.lower().startswith(("0x", "+", "-")) or "_" in text:
        raise CommandError(f'error parsing member ID: strconv.ParseUint: parsing "{text}": invalid syntax')
    return value


def cmd_etcd_remove_member(values: dict, args: list[str]) -> None:
    """``talosctl etcd remove-member <hex id>`` (etcd.go:170-189 -> EtcdRemoveMemberByID)."""
    member = _parse_member_id(args[0])
    t = target(values, insecure=False)
    try:
        t.node.etcd_remove_member(t.addr, t.auth, member, node=t.md)
    except (NodeError, TransportError) as exc:
        raise _rpc("error removing member", exc, t) from None


def cmd_etcd_leave(values: dict, args: list[str]) -> None:
    """``talosctl etcd leave`` (etcd.go:154-168 -> EtcdLeaveCluster)."""
    t = target(values, insecure=False)
    try:
        t.node.etcd_leave(t.addr, t.auth, node=t.md)
    except (NodeError, TransportError) as exc:
        raise _rpc("error leaving cluster", exc, t) from None


def _si_bytes(n: int) -> str:
    """go-humanize ``Bytes``: SI units, one decimal under 10 (``20 kB``, ``1.2 MB``, ``83 MB``)."""
    if n < 10:
        return f"{n} B"
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    e = 0
    v = float(n)
    while v >= 1000 and e < len(units) - 1:
        v /= 1000
        e += 1
    v = int(v * 10 + 0.5) / 10
    return (f"{v:.0f}" if v >= 10 else f"{v:.1f}") + f" {units[e]}"


def cmd_etcd_status(values: dict, args: list[str]) -> None:
    """``talosctl etcd status`` (etcd.go:267-330): the node's member status."""
    t = target(values, insecure=False)
    try:
        st = t.node.etcd_status(t.addr, t.auth, node=t.md)
    except (NodeError, TransportError) as exc:
        raise _rpc("error getting status", exc, t) from None
    except SnapshotHangs:
        _hang_until_signalled()
        raise CommandError("error getting status: rpc error: code = Canceled desc = context canceled") from None
    ratio = st["db_size_in_use"] / st["db_size"] * 100 if st["db_size"] else 0.0
    head = ("MEMBER", "DB SIZE", "IN USE", "LEADER", "RAFT INDEX", "RAFT TERM", "RAFT APPLIED INDEX", "LEARNER",
            "PROTOCOL", "STORAGE", "ERRORS")
    row = (f"{st['member_id']:016x}", _si_bytes(st["db_size"]), f"{_si_bytes(st['db_size_in_use'])} ({ratio:.2f}%)",
           f"{st['leader']:016x}", str(st["raft_index"]), str(st["raft_term"]), str(st["raft_applied_index"]),
           str(st["is_learner"]).lower(), st["version"], "", ", ".join(st["errors"]))
    print(_tab([("NODE", *head), (t.shown, *row)] if t.md else [head, row]))
