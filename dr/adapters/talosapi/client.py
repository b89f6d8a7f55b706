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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

from google.protobuf.message import DecodeError

from dr.adapters.talosapi import h2stream, messages
from dr.core.errors import ConfigError, DRError, NodeError, NodeUnreachable, Timeout, TruncatedSnapshot
from dr.core.integrity import SnapshotDigest, TrailerHasher
from dr.core.talos_credentials import TalosCredentials

APID_PORT = 50000
# Roles (client certificate Organization) apid lets call EtcdSnapshot.
SNAPSHOT_ROLES = ("os:admin", "os:operator", "os:etcd:backup")
_DATA_1K = b"\x12\x80\x08"  # common.Data field 2 (bytes), length 1024 as a varint: how apid's messages begin
_DATA_1K_END = 3 + 1024
COALESCE = 64 * 1024  # bytes per chunk handed to the caller (the stream's messages are 1 KiB)
DEFAULT_TIMEOUT = 900.0  # a whole snapshot stream; Lambda's own limit is 15 minutes


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
        failures are ``CallError``s; a message that is not a ``common.Data`` protobuf is a ``NodeError``.

        apid's snapshot messages all start the same way (field 2, 1024 bytes; a forwarded one then has the same
        metadata appended to each): those are cut without a protobuf object each, which is most of the client's
        time per message. Anything else is decoded in full."""
        raw = h2stream.unary_stream(self.host, self.port, method, request.SerializeToString(), self._ssl,
                                    timeout=self.timeout, server_name=self.server_name,
                                    metadata=[("nodes", n) for n in self.nodes], idle_timeout=self.idle_timeout)
        last_rest, last_md = b"", None
        try:
            for data in raw:
                if data[:3] == _DATA_1K and len(data) >= _DATA_1K_END:
                    rest = data[_DATA_1K_END:]
                    if not rest or rest == last_rest:
                        yield data[3:_DATA_1K_END], (last_md if rest else None)
                        continue
                    tail = self._decode(rest)  # the fields after the bytes: the metadata apid appended
                    if not tail.bytes:  # (a second `bytes` field would replace the first: decode it all then)
                        last_rest, last_md = rest, (tail.metadata if tail.HasField("metadata") else None)
                        yield data[3:_DATA_1K_END], last_md
                        continue
                msg = self._decode(data)
                yield msg.bytes, (msg.metadata if msg.HasField("metadata") else None)
        finally:
            raw.close()

    def __enter__(self) -> TalosClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def iter_etcd_snapshot(self, digest_out: list[SnapshotDigest] | None = None) -> Generator[bytes, None, None]:
        """Yield the snapshot's bytes as apid streams them; after the last chunk, check the hash trailer.

        Raises an ``IntegrityError`` (after the last chunk) when the stream is cut or corrupt, ``NodeUnreachable``,
        ``NodeError`` or ``Timeout`` for RPC failures. When ``digest_out`` is a list, the verified digest is appended.
        Stopping early (closing the generator) cancels the RPC.
        """
        hasher = TrailerHasher(f"etcd snapshot streamed from {self.node}")
        stream = self._stream(messages.ETCD_SNAPSHOT_METHOD, messages.EtcdSnapshotRequest())
        # apid's 1 KiB messages are handed on in pieces of COALESCE bytes: each consumer layer (file, codec, upload)
        # then runs once per 64 messages instead of once per message.
        pending: list[bytes] = []
        pending_size = 0
        received = 0
        try:
            try:
                seen_host = None
                for data, md in stream:
                    # A forwarded stream carries metadata on every frame (apid's AppendInfo): read it when it changes.
                    if md is not None:  # node-controlled text: made printable before it can reach a log
                        if md.hostname != seen_host:
                            seen_host = md.hostname
                            self.hostname = h2stream.printable(md.hostname, 253) or self.hostname
                        name = self.hostname
                        if md.error or md.status.code:
                            reason = h2stream.printable(md.error or md.status.message)
                            raise NodeError(f"etcd snapshot from {self.node} failed on node {name or '?'}: {reason}")
                    if data:
                        received += len(data)
                        pending.append(data)
                        pending_size += len(data)
                        if pending_size >= COALESCE:
                            chunk = b"".join(pending)
                            pending.clear()
                            pending_size = 0
                            hasher.update(chunk)
                            yield chunk
                if pending:
                    chunk = b"".join(pending)
                    pending.clear()
                    hasher.update(chunk)
                    yield chunk
            except h2stream.Stalled as exc:
                if not received:
                    # machined's etcd client waits for etcd with no deadline (sandbox/CONFORMANCE.md "EtcdSnapshot
                    # with etcd down"): a call that never starts streaming means etcd is not answering.
                    raise NodeError(
                        f"etcd snapshot from {self.node}: no data for {exc.idle:.0f}s, so it was stopped: etcd on "
                        "the node is not answering; no snapshot was taken",
                        "look at `talosctl service etcd` and `talosctl logs etcd` on the node; a broken etcd is "
                        "what `python -m dr.restore` repairs (docs/RUNBOOK.md)",
                    ) from exc
                raise TruncatedSnapshot(
                    f"etcd snapshot stream from {self.node} stalled after {received} bytes (no data for "
                    f"{exc.idle:.0f}s)", "nothing was kept; check the node's load and the network, then retry",
                ) from exc
            except h2stream.CallError as exc:
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
            stream.close()  # cancels the call if we stopped early

    def etcd_snapshot(self, sink: BinaryIO | Callable[[bytes], object]) -> SnapshotResult:
        """Stream a snapshot into ``sink`` (a binary file or a callable taking each chunk) and verify its trailer.

        On failure the sink has received a partial snapshot: callers writing files write to ``NAME.part`` and remove it.
        """
        write = sink.write if hasattr(sink, "write") else sink
        digests: list[SnapshotDigest] = []
        for chunk in self.iter_etcd_snapshot(digests):
            write(chunk)
        return SnapshotResult(digest=digests[0], hostname=self.hostname)
