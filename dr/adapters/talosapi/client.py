"""A minimal Talos API client: ``EtcdSnapshot`` over mutual TLS to a node's apid.

Only what a scheduled backup needs. The snapshot is streamed chunk by chunk to the caller (never held in memory)
and its SHA-256 trailer is checked as it passes; the iterator raises after the last chunk when the trailer does not
verify, so a consumer that uploads as it goes (``dr.adapters.s3.upload_snapshot_stream``) aborts instead of completing.

The transport is ``dr.adapters.talosapi.h2stream`` (HTTP/2 on Python's OpenSSL): Talos's apid presents an Ed25519
key, which grpcio's TLS cannot handshake with (grpc/grpc#24252). grpcio stays only as the sandbox's second apid
backend, the independent gRPC server this client is tested against (tests/adapters/talosapi/test_client.py).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, BinaryIO

from google.protobuf.message import DecodeError

from dr.adapters.talosapi import h2stream, messages
from dr.core import spelling
from dr.core.errors import ConfigError, DRError, NodeError, NodeUnreachable, Timeout, TruncatedSnapshot
from dr.core.etcd_health import DEFAULT_QUOTA_BYTES, EtcdHealth
from dr.core.integrity import SnapshotDigest, TrailerHasher
from dr.core.member_choice import EtcdMember
from dr.core.talos_credentials import TalosCredentials

APID_PORT = 50000
# Roles (client certificate Organization) apid lets call EtcdSnapshot.
SNAPSHOT_ROLES = ("os:admin", "os:operator", "os:etcd:backup")
_DATA_1K = b"\x12\x80\x08"  # common.Data field 2 (bytes), length 1024 as a varint: how apid's messages begin
_DATA_1K_END = 3 + 1024
COALESCE = 64 * 1024  # bytes per chunk handed to the caller (the stream's messages are 1 KiB)
DEFAULT_TIMEOUT = 900.0  # a whole snapshot stream; Lambda's own limit is 15 minutes
UNARY_TIMEOUT = 20.0  # EtcdStatus / EtcdAlarmList / EtcdMemberList: one small answer; machined waits for etcd with no deadline


def check_client_certificate(cert_pem: bytes, now: datetime | None = None) -> None:
    """Fail early, with a clear message, on a client certificate apid would refuse as expired.

    apid's refusal arrives as a bare TLS alert; saying "expired on ..." here saves a guess. Read with
    ``dr.core.cert_expiry`` (a short DER walk), not ``cryptography``: importing that costs a backup ~7 MiB of its
    100 MiB budget and the Lambda does not need it. A certificate not valid yet (a wrong clock) is left to apid.
    """
    from dr.core.cert_expiry import CertificateFormatError, not_after

    try:
        end = not_after(cert_pem)
    except CertificateFormatError as exc:
        raise ConfigError(f"the Talos client certificate is not a PEM certificate: {exc}") from exc
    now = now or datetime.now(UTC)
    if now > end:
        raise ConfigError(
            f"the Talos client certificate expired on {end:%Y-%m-%d %H:%M} UTC",
            "run `pulumi up` to mint a new one (the schedule's credential is renewed by the program)",
        )


def _format_target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def map_status(
    code: str, details: str, node: str, what: str = "etcd snapshot", *, tls: bool | None = None
) -> DRError:
    """One ``DRError`` for a failed call (``code`` is a gRPC status name), worded for the person who fixes it."""
    low = details.lower()
    where = f"{what} from {node}"
    if tls is None:
        tls = any(w in low for w in ("handshake", "ssl", "certificate", "x509", "tls"))
    if code == "PERMISSION_DENIED":
        return NodeError(
            f"{where} refused: {details}",
            "the client certificate's role (Organization) must be one of " + ", ".join(SNAPSHOT_ROLES),
        )
    if code == "UNAUTHENTICATED":
        return NodeError(f"{where} refused: not authenticated ({details})", "use a certificate signed by the node's OS CA")
    if code == "DEADLINE_EXCEEDED":
        return Timeout(f"{where} did not finish in time ({details})", "check the node's load and the network path")
    if code == "UNAVAILABLE" and h2stream.NO_TLS_REPLY in details:
        return NodeUnreachable(f"{where} failed: {details}",
                               f"check --endpoint names the node's apid (port {APID_PORT}); a node that is booting "
                               "answers in a minute or two: run the same command again then")
    if code == "UNAVAILABLE" and tls:
        if "expired" in low:
            hint = "a certificate has expired: run `pulumi up` to renew the client certificate, check the node's clock"
        else:
            hint = (
                "the node's certificate is not signed by the CA you trust, or your client certificate is not signed by "
                "the node's OS CA (or has expired): use the CA and certificate from this stack's machine secrets"
            )
        return NodeUnreachable(f"TLS handshake with {node} failed during {what}: {details}", hint)
    if code == "UNAVAILABLE":
        return NodeUnreachable(
            f"{where} failed: the node does not answer ({details})",
            f"check the node is running and that port {APID_PORT}/tcp is open from here",
        )
    if code == "CANCELLED":
        return NodeError(f"{where} was cancelled: {details}")
    return NodeError(f"{where} failed: {code}: {details}")


def map_rpc_error(exc: h2stream.CallError, node: str, what: str = "etcd snapshot") -> DRError:
    """``map_status`` for an ``h2stream.CallError``."""
    return map_status(exc.code, exc.details, node, what, tls=exc.tls or None)


@dataclass
class SnapshotResult:
    """What a finished ``etcd_snapshot`` streamed: the verified digest and the node's hostname."""

    digest: SnapshotDigest
    hostname: str


class TalosClient:
    """A client for one node's apid. Build one per operation; each call opens (and closes) its own connection."""

    def __init__(
        self,
        host: str,
        credentials: TalosCredentials,
        *,
        port: int = APID_PORT,
        timeout: float = DEFAULT_TIMEOUT,
        server_name: str | None = None,
        nodes: Sequence[str] = (),
        idle_timeout: float | None = None,
    ):
        """``host`` is the address dialed. ``nodes`` is sent as the ``nodes`` gRPC metadata, the way talosctl names
        its target (talosctl's ``WithClient`` -> ``client.WithNodes``, pkg/machinery/client/context.go:16-25): apid
        at ``host`` then routes the call to that node. Empty (the Lambda, which dials the node itself): no metadata,
        served by the node dialed. ``idle_timeout``: a stream that brings nothing for that long is stopped."""
        self.server_name = server_name
        self.host = host
        self.port = port
        self.nodes = tuple(nodes)
        self.idle_timeout = idle_timeout
        via = _format_target(host, port)
        self.node = f"{self.nodes[0]} (via {via})" if len(self.nodes) == 1 and self.nodes[0] != host else via
        self.timeout = timeout
        self.credentials = credentials
        self.hostname = host  # replaced by the node's own name when apid reports it
        self._seen_host: str | None = None
        check_client_certificate(credentials.cert_pem)
        try:
            self._ssl = h2stream.client_context(credentials.ca_pem, credentials.cert_pem, credentials.key_pem)
        except Exception as exc:  # unusable PEM: ssl raises SSLError/ValueError
            raise ConfigError(f"the Talos client credential is unusable: {exc}", "re-run `pulumi up` to rewrite it") from exc

    def close(self) -> None:
        """Nothing to release: each call's connection closes with the call (kept so ``with`` reads naturally)."""

    def _decode(self, data: bytes) -> Any:
        try:
            return messages.Data.FromString(data)
        except DecodeError as exc:
            raise NodeError(
                f"{self.node} sent a gRPC message that is not a Talos common.Data ({len(data)} bytes): "
                f"{h2stream.printable(str(exc))}",
                "check that the address is the node's apid (port 50000), then take the snapshot again",
            ) from exc

    def _stream(self, method: str, request) -> Generator[tuple[bytes, Any], None, None]:
        """``(bytes, metadata or None)`` of each ``common.Data`` message of a server-streaming call. Transport
        failures are ``CallError``s; a message that is not a ``common.Data`` protobuf is a ``NodeError``."""
        raw = h2stream.unary_stream(self.host, self.port, method, request.SerializeToString(), self._ssl,
                                    timeout=self.timeout, server_name=self.server_name,
                                    metadata=[("nodes", n) for n in self.nodes], idle_timeout=self.idle_timeout)
        memo: list = [b"", None]
        try:
            for data in raw:
                yield self._cut(data, memo)
        finally:
            raw.close()

    def _cut(self, data: bytes, memo: list) -> tuple[bytes, Any]:
        """One ``common.Data`` message as ``(bytes, metadata or None)``.

        apid's snapshot messages all start the same way (field 2, 1024 bytes; a forwarded one then has the same
        metadata appended to each): those are cut without a protobuf object each, which is most of the client's
        time per message; ``memo`` holds the last appended metadata seen, raw and decoded. Anything else is decoded
        in full."""
        if data[:3] == _DATA_1K and len(data) >= _DATA_1K_END:
            rest = data[_DATA_1K_END:]
            if not rest or rest == memo[0]:
                return data[3:_DATA_1K_END], (memo[1] if rest else None)
            tail = self._decode(rest)  # the fields after the bytes: the metadata apid appended
            if not tail.bytes:  # (a second `bytes` field would replace the first: decode it all then)
                memo[0], memo[1] = rest, (tail.metadata if tail.HasField("metadata") else None)
                return data[3:_DATA_1K_END], memo[1]
        msg = self._decode(data)
        return msg.bytes, (msg.metadata if msg.HasField("metadata") else None)

    def __enter__(self) -> TalosClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_metadata(self, md: Any) -> None:
        """A forwarded stream carries metadata on every frame (apid's AppendInfo): take the node's name when it
        changes, and fail on a reported error. Node-controlled text: made printable before it can reach a log."""
        if md.hostname != self._seen_host:
            self._seen_host = md.hostname
            self.hostname = h2stream.printable(md.hostname, 253) or self.hostname
        if md.error or md.status.code:
            reason = h2stream.printable(md.error or md.status.message)
            raise NodeError(f"etcd snapshot from {self.node} failed on node {self.hostname or '?'}: {reason}")

    def iter_etcd_snapshot(self, digest_out: list[SnapshotDigest] | None = None) -> Generator[bytes, None, None]:
        """Yield the snapshot's bytes as apid streams them; after the last chunk, check the hash trailer.

        Raises an ``IntegrityError`` (after the last chunk) when the stream is cut or corrupt, ``NodeUnreachable``,
        ``NodeError`` or ``Timeout`` for RPC failures. When ``digest_out`` is a list, the verified digest is appended.
        Stopping early (closing the generator) cancels the RPC.
        """
        hasher = TrailerHasher(f"etcd snapshot streamed from {self.node}")
        batches = h2stream.unary_stream_batches(
            self.host, self.port, messages.ETCD_SNAPSHOT_METHOD, messages.EtcdSnapshotRequest().SerializeToString(),
            self._ssl, timeout=self.timeout, server_name=self.server_name,
            metadata=[("nodes", n) for n in self.nodes], idle_timeout=self.idle_timeout)
        # apid's 1 KiB messages are handed on in pieces of COALESCE bytes: each consumer layer (file, codec, upload)
        # then runs once per 64 messages instead of once per message. The messages of each read come as one list
        # (a real apid sends a million per GiB): a message served locally, 1 KiB with nothing after it, costs a
        # slice and an append here, nothing more.
        pending: list[bytes] = []
        pending_size = 0
        sent = 0  # bytes handed on
        memo: list = [b"", None]
        checked_rest = None  # the metadata a forwarded message carries after its bytes, once it passed the checks
        self._seen_host = None
        try:
            try:
                for batch in batches:
                    for raw in batch:
                        if raw[:3] == _DATA_1K and (len(raw) == _DATA_1K_END or raw[_DATA_1K_END:] == checked_rest):
                            # 1 KiB served locally (nothing after it), or forwarded with the same metadata as before
                            pending.append(raw[3:_DATA_1K_END])
                            pending_size += 1024
                        else:
                            data, md = self._cut(raw, memo)
                            if md is not None:
                                self._check_metadata(md)
                                if memo[0] and md is memo[1]:  # a 1 KiB message's appended metadata, now checked
                                    checked_rest = memo[0]
                            if not data:
                                continue
                            pending.append(data)
                            pending_size += len(data)
                        if pending_size >= COALESCE:
                            chunk = b"".join(pending)
                            pending.clear()
                            pending_size = 0
                            hasher.update(chunk)
                            sent += len(chunk)
                            yield chunk
                if pending:
                    chunk = b"".join(pending)
                    pending.clear()
                    pending_size = 0
                    hasher.update(chunk)
                    sent += len(chunk)
                    yield chunk
            except h2stream.Stalled as exc:
                received = sent + pending_size
                if not received:
                    # machined's etcd client waits for etcd with no deadline (sandbox/CONFORMANCE.md "EtcdSnapshot
                    # with etcd down"): a call that never starts streaming means etcd is not answering.
                    raise NodeError(
                        f"etcd snapshot from {self.node}: no data for {exc.idle:.0f}s, so it was stopped: etcd on "
                        "the node is not answering; no snapshot was taken",
                        "look at `talosctl service etcd` and `talosctl logs etcd` on the node; a broken etcd is "
                        f"what `{spelling.command('restore')}` repairs (docs/RUNBOOK.md)",
                    ) from exc
                raise TruncatedSnapshot(
                    f"etcd snapshot stream from {self.node} stalled after {received} bytes (no data for "
                    f"{exc.idle:.0f}s)", "nothing was kept; check the node's load and the network, then retry",
                ) from exc
            except h2stream.CallError as exc:
                received = sent + pending_size
                err = map_rpc_error(exc, self.node)
                if received and isinstance(err, NodeUnreachable | NodeError):
                    err = TruncatedSnapshot(
                        f"etcd snapshot stream from {self.node} was cut after {received} bytes: {err.message}",
                        "nothing was kept; take the snapshot again",
                    )
                raise err from exc
            digest = hasher.finish()
            if digest_out is not None:
                digest_out.append(digest)
        finally:
            batches.close()  # cancels the call if we stopped early

    def etcd_snapshot(self, sink: BinaryIO | Callable[[bytes], object]) -> SnapshotResult:
        """Stream a snapshot into ``sink`` (a binary file or a callable taking each chunk) and verify its trailer.

        On failure the sink has received a partial snapshot: callers writing files write to ``NAME.part`` and remove it.
        """
        write = sink.write if hasattr(sink, "write") else sink
        digests: list[SnapshotDigest] = []
        for chunk in self.iter_etcd_snapshot(digests):
            write(chunk)
        return SnapshotResult(digest=digests[0], hostname=self.hostname)

    # --- unary calls: etcd's state ----------------------------------------------------------------------------

    def _unary(self, method: str, response_cls: Any, what: str, timeout: float,
               request: bytes = messages.EMPTY_REQUEST) -> Any:
        """One response message of a unary call, decoded as ``response_cls``. With etcd down, machined's etcd client
        waits with no deadline (as for EtcdSnapshot), so the call is bounded by ``timeout`` and reported as etcd not
        answering when it brings nothing."""
        # The stall timer, not the deadline, ends a call nothing answers: that is what says "etcd is not answering".
        raw = h2stream.unary_stream(self.host, self.port, method, request, self._ssl,
                                    timeout=2 * timeout + 5, server_name=self.server_name,
                                    metadata=[("nodes", n) for n in self.nodes], idle_timeout=timeout)
        try:
            got = list(raw)
        except h2stream.Stalled as exc:
            raise NodeError(
                f"{what} from {self.node}: no answer for {exc.idle:.0f}s: etcd on the node is not answering",
                "look at `talosctl service etcd` and `talosctl logs etcd` on the node",
            ) from exc
        except h2stream.CallError as exc:
            if "no leader" in exc.details:  # etcd's ErrGRPCNoLeader (Unavailable): etcd answers, without a leader
                raise NodeError(f"{what} from {self.node}: its etcd member has no leader ({exc.details})",
                                "etcd has lost quorum, or is electing a leader: ask again in a few seconds") from exc
            raise map_rpc_error(exc, self.node, what) from exc
        finally:
            raw.close()
        if len(got) != 1:
            raise NodeError(f"{what} from {self.node}: expected one answer, got {len(got)}")
        try:
            return response_cls.FromString(got[0])
        except DecodeError as exc:
            raise NodeError(f"{self.node} sent an answer to {what} that is not a Talos {response_cls.DESCRIPTOR.name}: "
                            f"{h2stream.printable(str(exc))}") from exc

    def _one(self, response: Any, what: str) -> Any:
        """The single per-node message of a Talos response (``messages[0]``); its metadata error raises."""
        if len(response.messages) != 1:
            raise NodeError(f"{what} from {self.node}: expected one node's answer, got {len(response.messages)}")
        msg = response.messages[0]
        md = msg.metadata
        if msg.HasField("metadata") and (md.error or md.status.code):
            raise NodeError(f"{what} from {self.node} failed: {h2stream.printable(md.error or md.status.message)}")
        return msg

    def etcd_health(self, quota: int = DEFAULT_QUOTA_BYTES, *, timeout: float = UNARY_TIMEOUT) -> EtcdHealth:
        """``EtcdStatus`` and ``EtcdAlarmList`` of the node (both allowed to os:etcd:backup), as one ``EtcdHealth``.
        ``quota`` is the stack's --quota-backend-bytes (the node does not report it)."""
        status = self.etcd_status(quota, timeout=timeout)
        by_member = self.etcd_alarms(timeout=timeout)
        return replace(status, alarms=tuple(sorted({name for _, name in by_member})), member_alarms=by_member)

    def etcd_status(self, quota: int = DEFAULT_QUOTA_BYTES, *, timeout: float = UNARY_TIMEOUT) -> EtcdHealth:
        """``EtcdStatus`` alone (no alarms): what the member says of itself. It answers without a leader too (etcd's
        Maintenance.Status is local), where ``EtcdAlarmList`` goes through raft and waits for one."""
        status = self._one(self._unary(messages.ETCD_STATUS_METHOD, messages.EtcdStatusResponse, "etcd status",
                                       timeout), "etcd status").member_status
        return EtcdHealth(
            db_size=int(status.db_size),
            db_size_in_use=int(status.db_size_in_use),
            quota=quota,
            member_id=int(status.member_id),
            errors=tuple(h2stream.printable(e, 200) for e in status.errors),
            leader=int(status.leader),
            raft_term=int(status.raft_term),
            raft_index=int(status.raft_index),
            raft_applied_index=int(status.raft_applied_index),
            is_learner=bool(status.is_learner),
        )

    def etcd_alarms(self, *, timeout: float = UNARY_TIMEOUT) -> tuple[tuple[int, str], ...]:
        """``EtcdAlarmList``: the active alarms as (member id, name), NONE left out."""
        alarm_msg = self._one(self._unary(messages.ETCD_ALARM_LIST_METHOD, messages.EtcdAlarmListResponse,
                                          "etcd alarm list", timeout), "etcd alarm list")
        return tuple((int(a.member_id), messages.ALARM_TYPES.get(a.alarm, f"ALARM_{a.alarm}"))
                     for a in alarm_msg.member_alarms if a.alarm != 0)

    def etcd_members(self, *, query_local: bool = True, timeout: float = UNARY_TIMEOUT) -> tuple[EtcdMember, ...]:
        """``EtcdMemberList`` (allowed to os:etcd:backup): the etcd members as this node's etcd lists them.

        ``query_local`` (the default) asks the node's own etcd member, not any control-plane node's: what this
        node's member says is what a quorum check needs. machined asks with require-leader, so a member that has no
        leader fails the call (``NodeError``, "etcdserver: no leader") instead of answering from a minority."""
        request = messages.EtcdMemberListRequest(query_local=query_local).SerializeToString()
        msg = self._one(self._unary(messages.ETCD_MEMBER_LIST_METHOD, messages.EtcdMemberListResponse,
                                    "etcd member list", timeout, request=request), "etcd member list")
        return tuple(EtcdMember(id=int(m.id), name=h2stream.printable(m.hostname, 253),
                                peer_urls=tuple(h2stream.printable(u, 300) for u in m.peer_urls),
                                client_urls=tuple(h2stream.printable(u, 300) for u in m.client_urls),
                                is_learner=bool(m.is_learner)) for m in msg.members)
