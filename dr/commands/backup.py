"""`python -m dr.backup`: a verified, timestamped etcd snapshot, local pruning, and optionally a copy in S3.

    python -m dr.backup                      # snapshot to .talos/snapshots/, prune local ones older than 7 days
    python -m dr.backup --save-to-s3         # ... and, in the same pass, to s3://<bucket>/snapshots/<name>.zst
    python -m dr.backup --save-to-s3 FILE    # take a fresh snapshot anyway, then upload FILE
    python -m dr.backup --via-talosctl ...   # the playbook's way: talosctl etcd snapshot, then upload the file

The snapshot comes through the Talos API (``dr.adapters.talosapi``, the client the scheduled Lambda uses) with the
talosconfig's client certificate, dialing the endpoint (the Elastic IP) and naming the node in the ``nodes`` metadata
as talosctl does, so no talosctl is needed. It is read from the node once: each chunk goes to the local ``.part``
(0600) and, with ``--save-to-s3``, into the S3 multipart upload at the same time (zstd/age on the S3 branch only);
the hash trailer is checked as it passes, and the upload is completed and the ``.part`` renamed only when it matches.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from dr.adapters import fsutil, s3
from dr.adapters.lock import exclusive
from dr.adapters.stack_outputs import OUTPUTS_FILE_ENV
from dr.adapters.store import Entry
from dr.adapters.talosapi import APID_PORT, TalosClient
from dr.adapters.talosapi.members import ask_all
from dr.adapters.talosctl import SnapshotInfo, Talosctl, talosconfig_credentials
from dr.commands import cli
from dr.commands.settings import DOWNLOADS, ENV_ENDPOINT, ENV_NODE, Resolver, add_common_flags
from dr.commands.source import check_local_file
from dr.core import member_choice, naming, spelling, timefmt
from dr.core.cluster_nodes import ClusterNode, from_outputs
from dr.core.errors import (
    ConfigError,
    DiskFull,
    DRError,
    LocalPathError,
    NodeError,
    NodeUnreachable,
    S3Error,
    SnapshotNotFound,
    SnapshotTooBig,
)
from dr.core.integrity import SnapshotDigest, iter_file, verify_file
from dr.core.retention import FUTURE_SLACK, KEEP_NEWEST, Policy, apply_policy, future_dated, suspended

PROG = spelling.command("backup")
LOCK_NAME = ".dr.lock"
STALL_SECONDS = 30.0  # no byte from the node for this long: etcd is not answering (it would hang forever)
STREAM_TIMEOUT = 24 * 3600.0  # a whole snapshot stream; a slow link is not a hang (the stall timeout catches those)
MEMBER_TIMEOUT = 10.0  # per call when asking each member (EtcdStatus, EtcdMemberList): a hung etcd is "not answering"


def ensure_snapshots_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


# What this tool's own partial files are called: a snapshot name, then fsutil's ".<8 hex>.part" or talosctl's ".part".
_OURS = re.compile(r"^(?P<name>.+?)(?:\.[0-9a-f]{8})?\.part$")


def is_our_partial(p: Path) -> bool:
    """A regular file (never a link, FIFO or folder) whose name is a snapshot name plus our ``.part`` suffix."""
    m = _OURS.match(p.name)
    return m is not None and naming.parse(m.group("name")) is not None and p.is_file() and not p.is_symlink()


def clean_partials(snapshots_dir: Path) -> list[Path]:
    """Remove the ``.part`` files a killed run of this tool left behind: never a file it did not
    create, never a FIFO or a link. Call only while holding the lock."""
    removed = []
    for folder in (snapshots_dir, snapshots_dir / DOWNLOADS):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if is_our_partial(p):
                p.unlink()
                removed.append(p)
    return removed


def etcd_must_run(talosctl: Talosctl) -> None:
    """Refuse at once when etcd is not running on the node: a snapshot would only hang (the node's etcd client waits
    for etcd with no deadline). A talosconfig that may not list services (os:etcd:backup) skips the check; the
    snapshot's own stall watchdog covers it then."""
    try:
        svc = talosctl.service("etcd")
    except NodeError as exc:
        if "permissiondenied" in exc.message.lower().replace(" ", "") or "not authorized" in exc.message.lower():
            return
        raise
    if svc.state != "Running":
        detail = f": {svc.last_message}" if svc.last_message else ""
        raise NodeError(f"etcd on node {talosctl.where} is not running (service etcd: {svc.state}{detail}); no "
                        "snapshot was taken",
                        f"a broken etcd is what `{spelling.command('restore')}` repairs (docs/RUNBOOK.md: etcd "
                        "corrupt); "
                        f"look at `talosctl -n {talosctl.node} -e {talosctl.endpoint} logs etcd`")


def fresh_name(snapdir: Path, now: Callable[[], datetime], *, safety: bool = False) -> tuple[Path, datetime]:
    """A snapshot path in ``snapdir`` no file has yet, and the time it is named after."""
    taken = now()
    final = snapdir / naming.snapshot_name(taken, safety=safety)
    while final.exists():  # two backups within one second: names must stay unique
        time.sleep(1.0)
        taken = now()
        final = snapdir / naming.snapshot_name(taken, safety=safety)
    return final, taken


def split_endpoint(endpoint: str, default_port: int = APID_PORT) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address -> (host, port), as talosctl reads endpoints."""
    e = endpoint.strip()
    if e.startswith("[") and "]" in e:
        host, rest = e[1:].split("]", 1)
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default_port
    if e.count(":") == 1:
        host, port = e.split(":")
        if port.isdigit():
            return host, int(port)
    return e, default_port


def talos_client(r: Resolver, stall: float) -> TalosClient:
    """A Talos API client as talosctl would connect: the talosconfig's credential, dialing the endpoint (the Elastic
    IP), the node's private IP in the ``nodes`` metadata (cmd/talosctl/pkg/talos/global/client.go WithClient)."""
    creds = talosconfig_credentials(r.talosconfig)
    host, port = split_endpoint(r.endpoint)
    return TalosClient(host, creds, port=port, nodes=[r.node], timeout=STREAM_TIMEOUT, idle_timeout=stall)


def max_stream_bytes(r: Resolver) -> int:
    """The byte cap on a snapshot streamed from the node: the same cap as on a stored one (DR_MAX_SNAPSHOT_BYTES,
    default 16 GiB: etcd's own quota tops out at 8 GiB)."""
    from dr.commands.source import max_bytes

    return max_bytes(r)


def cluster_nodes(r: Resolver) -> list[ClusterNode]:
    """The control-plane nodes when there are several: the stack's ``controlPlaneNodes``, else (no stack outputs at
    hand) the talosconfig's nodes reached through its endpoint (apid forwards to each). [] with one node or an older
    stack: the backup then goes exactly as before, with no member check. The stack's outputs are read only when the
    talosconfig lists several nodes or an outputs file is named, so a one-node backup still needs no Pulumi CLI."""
    try:
        listed = r.talosconfig.nodes
    except ConfigError:
        listed = ()
    if len(listed) <= 1 and not (r._flag("outputs_file") or r.env.get(OUTPUTS_FILE_ENV)):
        return []
    try:
        nodes = from_outputs(r.outputs.values)
    except ConfigError:
        nodes = []
    if len(nodes) > 1:
        return nodes
    if len(listed) > 1:
        host = r.endpoint
        return [ClusterNode(name=ip, private_ip=ip, public_ip=split_endpoint(host)[0]) for ip in listed]
    return []


def node_endpoint(r: Resolver, node: ClusterNode) -> str:
    """What to dial for ``node``: ``--endpoint`` when given (apid forwards to the node named), else the talosconfig
    endpoint on the node's Elastic IP (it carries the port when not 50000), else the Elastic IP."""
    explicit = r._flag("endpoint") or r.env.get(ENV_ENDPOINT)
    if explicit:
        return explicit
    try:
        endpoints = r.talosconfig.endpoints
    except ConfigError:
        endpoints = ()
    return next((e for e in endpoints if split_endpoint(e)[0] == node.public_ip), node.public_ip)


def choose_member(r: Resolver, out: TextIO, err: TextIO, *, no_quorum_ok: bool = False,
                  timeout: float = MEMBER_TIMEOUT) -> member_choice.Choice | None:
    """With several control-plane nodes: ask every member (EtcdStatus, EtcdAlarmList, EtcdMemberList), refuse without
    a quorum (``NoQuorum``, exit 28) unless ``no_quorum_ok``, and point ``r`` at the member to snapshot from (the one
    ``--node`` names, else ``dr.core.member_choice``'s pick). None with one node: nothing asked, nothing changed."""
    nodes = cluster_nodes(r)
    if len(nodes) <= 1:
        return None
    creds = talosconfig_credentials(r.talosconfig)

    def dial(n: ClusterNode) -> TalosClient:
        host, port = split_endpoint(node_endpoint(r, n))
        return TalosClient(host, creds, port=port, nodes=[n.private_ip], timeout=3 * timeout + 5)

    print(f"asking the {len(nodes)} etcd members ...", file=out, flush=True)
    answers = ask_all(nodes, dial, timeout=timeout)
    explicit = r._flag("node") or r.env.get(ENV_NODE)
    choice = member_choice.choose(nodes, answers, node=explicit, allow_no_quorum=no_quorum_ok, command=PROG)
    for line in choice.lines():
        print(line, file=out)
    if not choice.quorum:
        print(f"{PROG}: warning: etcd has no quorum: this snapshot is from {choice.source.label} alone and may miss "
              "the latest writes", file=err)
    elif not choice.source.healthy:
        print(f"{PROG}: warning: {choice.source.label} is {choice.source.state}, not a healthy member of the "
              f"majority: its snapshot may be stale or fail; without --node the backup would pick a healthy one",
              file=err)
    _point_at(r, choice)
    return choice


def _point_at(r: Resolver, choice: member_choice.Choice) -> None:
    r.node = choice.source.node.private_ip  # (a cached_property: set for this run)
    r.endpoint = node_endpoint(r, choice.source.node)


def stream_from_members(r: Resolver, choice: member_choice.Choice | None, now: Callable[[], datetime], out: TextIO,
                        err: TextIO, **kw) -> tuple[tuple[Path, SnapshotDigest, datetime, Entry | None],
                                                    member_choice.Choice | None]:
    """``stream_snapshot`` from the chosen member; when it fails on the node's side (the node stopped answering, the
    stream was cut or stalled, its trailer did not verify), from the next member of the majority, saying so
    (``member_choice.from_members``). Nothing of a failed attempt is kept (``stream_snapshot`` leaves no file, no
    object). Returns what was taken and from whom."""

    def attempt(c: member_choice.Choice | None) -> tuple[Path, SnapshotDigest, datetime, Entry | None]:
        if c is not None:
            _point_at(r, c)
        return stream_snapshot(r, now, out, err, member=c.record() if c else None, **kw)

    def failed(c: member_choice.Choice, exc: DRError, nxt: member_choice.Choice) -> None:
        print(f"{PROG}: warning: the snapshot from {c.source.label} failed ({exc.message}); nothing of it was kept; "
              f"trying {nxt.source.label}, the next healthy member of the majority", file=err)

    return member_choice.from_members(choice, attempt, on_failure=failed)


def stream_snapshot(r: Resolver, now: Callable[[], datetime], out: TextIO, err: TextIO, *, to_s3: bool = False,
                    compress: bool = True, stall: float = STALL_SECONDS, member: dict[str, str] | None = None
                    ) -> tuple[Path, SnapshotDigest, datetime, Entry | None]:
    """One pass from the node: every chunk to ``NAME.<random>.part`` (0600) and, with ``to_s3``, into the store's
    upload (zstd/age there only). The trailer is checked as the stream ends; then the ``.part`` is fsynced, the S3
    object completed, and the ``.part`` renamed to ``NAME``. Any failure leaves neither (the upload is aborted)."""
    client = talos_client(r, stall)
    final, taken = fresh_name(r.snapshots_dir, now)
    print(f"taking an etcd snapshot from node {client.node} ...", file=out, flush=True)
    start = time.monotonic()
    digests: list[SnapshotDigest] = []
    entry: Entry | None = None
    s3_failed: S3Error | None = None
    recipients = r.recipients if to_s3 else []
    try:
        with fsutil.atomic_writer(final, mode=0o600, overwrite=False) as f:
            cap = max_stream_bytes(r)

            def tee():
                seen = 0
                for chunk in client.iter_etcd_snapshot(digests):
                    seen += len(chunk)
                    if seen > cap:
                        # A node that never ends its stream would fill the disk.
                        raise SnapshotTooBig(f"node {client.node} sent more than {cli.human_size(cap)} without ending "
                                             "its snapshot, more than any etcd database; stopped, nothing kept",
                                             f"check etcd on the node (`talosctl -n {r.node} service etcd`); raise "
                                             "DR_MAX_SNAPSHOT_BYTES only if its database really is that big")
                    f.write(chunk)
                    yield chunk
                f.flush()
                os.fsync(f.fileno())  # on disk before the S3 object is completed

            chunks = tee()
            try:
                if to_s3:
                    progress = cli.Progress(f"uploading {final.name}", None, err)
                    meta = s3.snapshot_metadata(taken_at=taken, cluster=r.cluster, source="dr.backup", member=member)
                    try:
                        entry = r.s3_store().put(chunks, final.name, compress=compress, recipients=recipients,
                                                 metadata=meta, label=f"etcd snapshot streamed from {client.node}",
                                                 progress=progress)
                    except S3Error as exc:
                        # S3 failed (the upload is aborted); the node's stream still makes a verified local
                        # snapshot: read the rest of it, as a backup without --save-to-s3 would.
                        s3_failed = exc
                        for _ in chunks:
                            pass
                    else:
                        progress.finish()
                else:
                    for _ in chunks:
                        pass
            finally:
                chunks.close()  # a failure mid-stream cancels the call to the node
    except OSError as exc:
        if exc.errno == 28:
            raise DiskFull(f"writing {final} failed: no space left on device",
                           f"free space under {final.parent} and retry; if the node sent far more than its etcd "
                           "holds (`talosctl etcd status`), it is not ending its stream: check etcd on the node") from exc
        raise
    except NodeUnreachable as exc:
        if f"dial tcp {r.node}:" in exc.message and client.host != r.node:
            # apid at the endpoint answered, then could not dial the node named in `nodes`: it proxies every such
            # call to <node>:50000 (director.go, backend/apid.go), and a node cannot reach its own Elastic IP.
            raise ConfigError(f"{exc.message}: the node at {r.endpoint} answered, but could not reach node {r.node}",
                              "pass the node's private IP as --node (stack output nodePrivateIp) and its Elastic IP "
                              "as --endpoint") from exc
        raise
    digest = digests[0]
    secs = time.monotonic() - start
    print(f"saved {final} ({cli.human_size(digest.size)}, sha256 {digest.content_sha256[:16]}…, {secs:.1f}s); hash "
          "trailer verified", file=out)
    if s3_failed is not None:
        print(f"the upload failed, so only the local snapshot was kept; upload it later with `{PROG} "
              f"--save-to-s3 {final}`", file=out)
        raise s3_failed
    if entry is not None:
        print_uploaded(final, entry, digest, compress, bool(recipients), out, err)
    return final, digest, taken, entry


def take_local_snapshot(r: Resolver, now: Callable[[], datetime], out: TextIO, *, safety: bool = False,
                        stall: float = 60.0) -> tuple[Path, SnapshotDigest, SnapshotInfo, datetime]:
    """Snapshot through talosctl into ``NAME.part``, verify its hash trailer, rename to ``NAME``.

    ``safety=True`` names it ``pre-restore-etcd-snapshot-<ts>.db`` (the copy a restore takes first; never pruned)."""
    talosctl = r.talosctl()
    final, taken = fresh_name(r.snapshots_dir, now, safety=safety)
    part = final.with_name(final.name + ".part")
    for planted in (part, part.with_name(part.name + ".part")):
        if os.path.lexists(planted):  # not ours (clean_partials removed ours): never opened, never deleted
            raise LocalPathError(f"{planted} exists and is not a partial snapshot this tool left (it may be a FIFO or "
                                 "a link); nothing was taken", f"move {planted} out of {planted.parent} and retry")
    etcd_must_run(talosctl)
    print(f"taking an etcd snapshot from node {talosctl.where} ...", file=out, flush=True)
    start = time.monotonic()
    try:
        try:
            info = talosctl.etcd_snapshot(part, stall=stall)
        except DRError:
            # talosctl can fail after saving the file (reading the status of a damaged snapshot); the trailer
            # check then says what is really wrong.
            if part.exists():
                verify_file(part, f"snapshot from node {talosctl.node}")
            raise
        if not part.exists():
            raise SnapshotNotFound(f"talosctl reported success but wrote no file at {part}",
                                   "check the talosctl version matches the cluster and retry")
        os.chmod(part, 0o600)
        digest = verify_file(part, f"snapshot from node {talosctl.node}")
        fsutil.commit(part, final, overwrite=False)  # talosctl owns the .part (and fsynced it); rename, fsync folder
    finally:
        for leftover in (part, part.with_name(part.name + ".part")):
            try:
                leftover.unlink()
            except FileNotFoundError:
                pass
    secs = time.monotonic() - start
    rev = f", revision {info.revision}" if info.revision is not None else ""
    keys = f", {info.total_keys} database entries" if info.total_keys is not None else ""
    print(f"saved {final} ({cli.human_size(digest.size)}{rev}{keys}, sha256 {digest.content_sha256[:16]}…, "
          f"{secs:.1f}s); hash trailer verified", file=out)
    return final, digest, info, taken


def prune_local(snapdir: Path, keep_days: float, now: datetime, out: TextIO, *,
                protect: tuple[str, ...] = ()) -> list[Path]:
    """Apply the retention policy (dr.core.retention: the newest few always stay, future-dated ones are reported,
    age pruning waits out a clock jump) to the snapshots this tool wrote in ``snapdir`` and in its ``downloads``
    folder. Safety snapshots, files with other names and ``protect`` (this run's snapshot) are never touched."""
    removed: list[Path] = []
    for folder in (snapdir, snapdir / DOWNLOADS):
        if not folder.is_dir():
            continue
        removed += _prune_folder(folder, keep_days, now, out, protect)
    return removed


def pruning_clock(r: Resolver, local_now: datetime, out: TextIO, *, ask_s3: bool) -> datetime:
    """The time pruning measures ages against: S3's clock when it is at hand (``ask_s3``) and ours is off by more than
    the allowed skew (said out loud), else ours."""
    if not ask_s3:
        return local_now
    try:
        theirs = r.s3_store().server_time()
    except DRError:
        theirs = None
    if theirs is None:
        return local_now
    skew = local_now - theirs
    if abs(skew) > FUTURE_SLACK:
        ahead = "ahead of" if skew > timedelta(0) else "behind"
        print(f"warning: this machine's clock ({timefmt.iso_utc(local_now)}) is {timefmt.human_duration(abs(skew).total_seconds())} "
              f"{ahead} S3's ({timefmt.iso_utc(theirs)}): ages are measured against S3's clock; fix the clock "
              "(`timedatectl`, NTP)", file=out)
        return theirs
    return local_now


def _prune_folder(folder: Path, keep_days: float, now: datetime, out: TextIO, protect: tuple[str, ...] = ()
                  ) -> list[Path]:
    snaps = []
    for p in folder.iterdir():
        parsed = naming.parse(p.name)
        if parsed is not None and not parsed.safety and p.is_file() and not p.is_symlink():
            snaps.append((p.name, parsed.taken_at))
    decisions = apply_policy(snaps, Policy(keep_days), now, protect=protect)
    if folder.is_symlink():
        # Hostile-inputs 37: a link to an archive folder was pruned like our own; it still is (the user pointed it
        # there), but said first.
        print(f"note: {folder} is a symbolic link to {os.path.realpath(folder)}: snapshots there are pruned by the "
              f"same {keep_days:g}-day rule", file=out)
    removed = []
    for d in decisions:
        if not d.keep:
            (folder / d.name).unlink(missing_ok=True)
            removed.append(folder / d.name)
    kept = [d for d in decisions if d.keep]
    what = "downloaded snapshots" if folder.name == DOWNLOADS else "local snapshots"
    print(f"{what} in {folder}: {len(kept)} kept, {len(removed)} pruned (older than {keep_days:g} days; "
          f"the newest {KEEP_NEWEST} are always kept)", file=out)
    # Every pruned file is named; of the kept ones only the newest (a list of every kept one would bury the news), and
    # every one kept for a reason a person should look at (a future date, a suspended prune).
    for i, d in enumerate(decisions):
        if not d.keep or i == 0 or d in future_dated(decisions):
            print(f"  {'kept  ' if d.keep else 'pruned'}  {cli.printable(d.name)}  ({d.reason})", file=out)
    shown = sum(1 for i, d in enumerate(decisions) if d.keep and (i == 0 or d in future_dated(decisions)))
    if len(kept) > shown:  # say the rest exist, so the count and the lines agree
        print(f"  ... and {len(kept) - shown} more kept", file=out)
    if suspended(decisions):
        print(f"  note: nothing in {folder} was pruned by age: the snapshot before the newest is older than "
              f"{keep_days:g} days (a clock that jumped forward, or backups that stopped); check `date -u`", file=out)
    return removed


def remote_key_for(path: Path, prefix: str) -> str:
    """The object key for a local file: its own name when it is a snapshot name, else one made from its mtime.

    Generated names keep shell metacharacters and odd names out of the bucket."""
    name = path.name
    if naming.parse_snapshot_name(name) is None or naming.is_safety_snapshot(name):
        name = naming.snapshot_name(datetime.fromtimestamp(path.stat().st_mtime, UTC))
    return prefix + name


def upload(r: Resolver, path: Path, digest: SnapshotDigest, taken_at: datetime, revision: int | None,
           out: TextIO, err: TextIO, *, compress: bool = True, member: dict[str, str] | None = None) -> str:
    """Store ``path`` in the bucket: zstd-compressed unless ``compress`` is off, age-encrypted to the stack's
    recipients when there are any; the trailer is checked on the plaintext as it streams."""
    store = r.s3_store()
    recipients = r.recipients
    plain = remote_key_for(path, "")
    name = naming.stored_name(plain, compressed=compress, encrypted=bool(recipients))
    try:
        existing: Entry | None = store.head(name)  # exactly this key: one HEAD, no listing
    except SnapshotNotFound:
        existing = None
    if existing is not None:
        if existing.sha256 == digest.content_sha256:
            print(f"{existing.location} already holds this snapshot (same SHA-256); not uploaded again", file=out)
            return existing.key or name
        raise ConfigError(f"{existing.location} already exists and holds another snapshot; it is never overwritten",
                          "rename the local file (or take a new snapshot) and upload again")
    # The total is known only for an uncompressed, unencrypted copy; otherwise the bytes sent so far are shown.
    progress = cli.Progress(f"uploading {path.name}", None if compress or recipients else digest.size, err)
    meta = s3.snapshot_metadata(taken_at=taken_at, cluster=r.cluster, source="dr.backup", sha256=digest.content_sha256,
                          size=digest.size, revision=revision, member=member)
    with open(path, "rb") as f:
        entry = store.put(iter_file(f), plain, compress=compress, recipients=recipients, metadata=meta,
                          expected_sha256=digest.content_sha256, label=f"snapshot {path}", progress=progress)
    progress.finish()
    print_uploaded(path, entry, digest, compress, bool(recipients), out, err)
    return entry.key or name


def print_uploaded(path: Path, entry: Entry, digest: SnapshotDigest, compress: bool, encrypted: bool,
                   out: TextIO, err: TextIO) -> None:
    layers = naming.format_name(compress, encrypted)
    how = {"plain": "", "zstd": "zstd-compressed, ", "age": "age-encrypted, ",
           "zstd+age": "zstd-compressed and age-encrypted, "}[layers]
    ratio = f", {entry.size / digest.size:.0%} of {cli.human_size(digest.size)}" if compress else ""
    print(f"uploaded {path} to {entry.location} ({how}{cli.human_size(entry.size)}{ratio}; SHA-256 recorded, "
          f"trailer verified while streaming)", file=out)
    if entry.warning:
        print(f"{PROG}: warning: {entry.warning}", file=err)


def print_bucket_listing(r: Resolver, now: datetime, out: TextIO, limit: int = 20) -> None:
    snaps = r.s3_store().list()
    print(f"snapshots in s3://{r.bucket}/{r.prefix} ({len(snaps)}), newest first:", file=out)
    width = max((len(s.name.name) for s in snaps[:limit]), default=0)  # pre-restore-... names are longer
    for s in snaps[:limit]:
        age = timefmt.human_age((now - s.name.taken_at).total_seconds())
        print(f"  {cli.printable(s.name.name):<{width}}  {cli.human_size(s.size):>10}  {age:>8} old", file=out)
    if len(snaps) > limit:
        print(f"  ... and {len(snaps) - limit} older (see `{spelling.command('list')}`)", file=out)


def preflight(args, r: Resolver) -> Path | None:
    """Validate everything before touching the node or S3; the file ``--save-to-s3 FILE`` names, when it does."""
    if args.keep_days < 0:
        raise ConfigError(f"--keep-days must be 0 or more, not {args.keep_days:g}", "pass e.g. --keep-days 7")
    if args.stall_timeout is not None and args.stall_timeout <= 0:
        raise ConfigError(f"--stall-timeout must be more than 0, not {args.stall_timeout:g}",
                          "pass e.g. --stall-timeout 30")
    upload_file = check_local_file(Path(args.save_to_s3)) if isinstance(args.save_to_s3, str) else None
    if args.via_talosctl:
        r.talosctl().binary  # noqa: B018 - fails early when talosctl is missing
    else:
        talos_client(r, STALL_SECONDS)  # a missing or unusable credential fails before anything else
    if args.save_to_s3:
        _ = (r.bucket, r.prefix, r.recipients)  # a bad bucket or age recipient fails before the snapshot
    return upload_file


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(PROG, "Take a verified etcd snapshot of the Talos node; prune old local ones; optionally upload.",
                   examples=(f"{PROG} --save-to-s3          # one pass: node -> local .db and the bucket",
                             f"{PROG}                       # local only, in .talos/snapshots",
                             f"{PROG} --save-to-s3 FILE     # upload an older local snapshot too"))
    p.add_argument("--save-to-s3", nargs="?", const=True, default=None, metavar="FILE",
                   help="upload the fresh snapshot (or FILE, after taking a fresh one anyway) to the backup bucket")
    p.add_argument("--keep-days", type=float, default=7.0, help="prune local snapshots older than this (default 7)")
    p.add_argument("--wait-lock", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for another backup/restore to finish (default: fail at once)")
    p.add_argument("--no-compress", action="store_true",
                   help="store the S3 copy uncompressed (default: zstd; the local copy is always a plain .db)")
    p.add_argument("--via-talosctl", action="store_true",
                   help="take the snapshot with `talosctl etcd snapshot`, then upload the file (the playbook's way; "
                        "default: one pass through the Talos API, no talosctl needed)")
    p.add_argument("--stall-timeout", type=cli.parse_duration, default=None,
                   metavar="DURATION", help=f"stop when the node sends nothing for this long: etcd is not answering "
                                           f"(default {STALL_SECONDS:g}s; 60s with --via-talosctl)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document on stdout at the end, also on failure (progress goes to stderr)")
    p.add_argument("--no-quorum-ok", action="store_true",
                   help="with several control-plane nodes and no etcd quorum, take the snapshot anyway from --node "
                        "(or the member that answers with the most applied): it may miss the latest writes "
                        "(default: refuse, exit 28)")
    add_common_flags(p)
    return p


def run(args: argparse.Namespace, out: TextIO, err: TextIO, clock: Callable[[], datetime]) -> int:
    """Take the snapshot (and upload it); with ``--json`` the narrative goes to ``err`` and the document to ``out``."""
    doc_out = out
    if args.json:
        out = err  # the narrative; stdout holds only the document
    result: dict = {}
    rc = _take(args, out, err, clock, result)
    if args.json:
        print(json.dumps({"ok": True, **result, "exit_code": rc}, indent=2), file=doc_out)
    return rc


def _take(args: argparse.Namespace, out: TextIO, err: TextIO, clock: Callable[[], datetime], result: dict) -> int:
    """The snapshot itself, under the backup lock; what it took goes into ``result``."""
    r = Resolver(args)
    upload_file = preflight(args, r)
    ensure_snapshots_dir(r.snapshots_dir)
    with exclusive(r.talos_dir / LOCK_NAME, "a backup", wait=args.wait_lock):
        for leftover in clean_partials(r.snapshots_dir):
            print(f"removed {leftover.name} left by an interrupted run", file=err)
        choice = choose_member(r, out, err, no_quorum_ok=args.no_quorum_ok)
        member = choice.record() if choice is not None else None
        if member is not None:
            result["member"] = member
        if not args.via_talosctl:
            one_pass = args.save_to_s3 is True
            stall = args.stall_timeout or STALL_SECONDS
            (path, digest, taken, entry), used = stream_from_members(r, choice, clock, out, err, to_s3=one_pass,
                                                                     compress=not args.no_compress, stall=stall)
            if used is not None:
                result["member"] = used.record()
            result.update(snapshot=str(path), sha256=digest.content_sha256, size=digest.size,
                          taken_at=timefmt.iso_utc(taken), s3=entry.location if entry is not None else None)
            prune_local(r.snapshots_dir, args.keep_days,
                        pruning_clock(r, clock(), out, ask_s3=bool(args.save_to_s3)), out, protect=(path.name,))
            if upload_file is not None:
                digest = verify_file(upload_file)
                taken = naming.parse_snapshot_name(upload_file.name) or datetime.fromtimestamp(
                    upload_file.stat().st_mtime, UTC)
                upload(r, upload_file, digest, taken, None, out, err, compress=not args.no_compress)
            if args.save_to_s3:
                print_bucket_listing(r, clock(), out)
            return 0
        path, digest, info, taken = take_local_snapshot(r, clock, out, stall=args.stall_timeout or 60.0)
        result.update(snapshot=str(path), sha256=digest.content_sha256, size=digest.size,
                      taken_at=timefmt.iso_utc(taken), revision=info.revision, s3=None)
        prune_local(r.snapshots_dir, args.keep_days,
                    pruning_clock(r, clock(), out, ask_s3=bool(args.save_to_s3)), out, protect=(path.name,))
        if args.save_to_s3:
            revision = info.revision
            if upload_file is not None:
                digest = verify_file(upload_file)
                path, revision = upload_file, None
                taken = naming.parse_snapshot_name(path.name) or datetime.fromtimestamp(
                    path.stat().st_mtime, UTC)
            key = upload(r, path, digest, taken, revision, out, err, compress=not args.no_compress,
                         member=member if upload_file is None else None)
            result["s3"] = f"s3://{r.bucket}/{key}"
            print_bucket_listing(r, clock(), out)
    return 0


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None,
         now: Callable[[], datetime] | None = None) -> int:
    args = build_parser().parse_args(argv)
    clock = now or (lambda: datetime.now(UTC))
    return cli.execute(PROG, args, lambda o, e: run(args, o, e, clock), out=out, err=err)
