"""A tiny loopback HTTP proxy in front of moto's S3 server that injects faults into real S3 traffic.

    proxy = FaultProxy(upstream_port)
    proxy.fail("PUT", times=3)           # the next 3 PUTs get 500 InternalError (the S3 server's words)
    proxy.delay("GET", seconds=1, times=2)
    proxy.on_request = lambda method, path: ...  # e.g. kill the server when the 2nd part arrives
    proxy.cut_get_after = 1 << 20        # GET bodies: call on_cut() and drop the connection after 1 MiB
    proxy.throttle(20_000_000)           # a slow link: at most 20 MB/s up and 20 MB/s down, all connections together

Requests and headers go through unchanged (the Host header too, so signatures still match). When the upstream is
gone, the proxy drops the client's connection without an answer, as a dead server's socket would.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}

ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{msg}</Message>'
    "<RequestId>fault-proxy</RequestId></Error>"
)


class _Rule:
    def __init__(self, method: str | None, times: int, action: str, value: float):
        self.method, self.times, self.action, self.value = method, times, action, value


class _Link:
    """One direction of a link: ``pass_(n)`` returns once ``n`` more bytes fit in ``rate`` bytes per second (shared by
    every connection, as one network path is)."""

    def __init__(self) -> None:
        self.rate: float | None = None
        self._next = 0.0
        self._lock = threading.Lock()

    def pass_(self, n: int) -> None:
        if not self.rate or n <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + n / self.rate
            wait = self._next - now
        time.sleep(wait)


class FaultProxy:
    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.rules: list[_Rule] = []
        self.log: list[tuple[str, str, int]] = []  # (method, path, status sent; 0 = dropped)
        self.on_request: Callable[[str, str], None] | None = None
        self.cut_get_after: int | None = None
        self.on_cut: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self.up = _Link()  # client -> S3 (request bodies)
        self.down = _Link()  # S3 -> client (response bodies)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self._read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self._read(n) if n else b""

            def _read(self, n: int) -> bytes:
                if not proxy.up.rate:
                    return self.rfile.read(n)
                parts = []
                while n > 0:
                    piece = self.rfile.read(min(n, 64 * 1024))
                    if not piece:
                        break
                    proxy.up.pass_(len(piece))
                    parts.append(piece)
                    n -= len(piece)
                return b"".join(parts)

            def _drop(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _handle(self) -> None:
                body = self._body()
                method, path = self.command, self.path
                if proxy.on_request:
                    proxy.on_request(method, path)
                rule = proxy._take(method)
                if rule and rule.action == "fail":
                    status = int(rule.value)
                    data = ERROR_XML.format(code="InternalError" if status == 500 else "SlowDown",
                                            msg="injected by the fault proxy").encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if method != "HEAD":
                        self.wfile.write(data)
                    proxy._record(method, path, status)
                    return
                if rule and rule.action == "delay":
                    time.sleep(rule.value)
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() not in _HOP and k.lower() != "content-length":
                            conn.putheader(k, v)
                    conn.putheader("Content-Length", str(len(body)))
                    conn.endheaders(body)
                    resp = conn.getresponse()
                except OSError:
                    proxy._record(method, path, 0)
                    self._drop()
                    return
                self.send_response(resp.status, resp.reason)
                length = resp.getheader("Content-Length")
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP and k.lower() not in ("date", "server"):
                        self.send_header(k, v)
                if length is None and method != "HEAD":
                    data = resp.read()
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    proxy._record(method, path, resp.status)
                    return
                self.end_headers()
                sent = 0
                if method != "HEAD":
                    while True:
                        try:
                            chunk = resp.read(64 * 1024)
                        except OSError:
                            proxy._record(method, path, 0)
                            self._drop()
                            return
                        if not chunk:
                            break
                        cut = proxy.cut_get_after
                        if method == "GET" and cut is not None and sent + len(chunk) >= cut:
                            self.wfile.write(chunk[: max(0, cut - sent)])
                            self.wfile.flush()
                            if proxy.on_cut:
                                proxy.on_cut()
                            proxy._record(method, path, 0)
                            self._drop()
                            return
                        proxy.down.pass_(len(chunk))
                        self.wfile.write(chunk)
                        sent += len(chunk)
                conn.close()
                proxy._record(method, path, resp.status)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client that hung up mid-answer is expected here
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _take(self, method: str) -> _Rule | None:
        with self._lock:
            for r in self.rules:
                if r.times > 0 and (r.method is None or r.method == method):
                    r.times -= 1
                    return r
        return None

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.log.append((method, path, status))

    def fail(self, method: str | None = None, times: int = 1, status: int = 500) -> None:
        self.rules.append(_Rule(method, times, "fail", status))

    def delay(self, method: str | None = None, seconds: float = 1.0, times: int = 1) -> None:
        self.rules.append(_Rule(method, times, "delay", seconds))

    def throttle(self, bytes_per_second: float | None) -> None:
        """Limit both directions to ``bytes_per_second`` (None: no limit)."""
        self.up.rate = self.down.rate = bytes_per_second

    def requests(self, method: str | None = None) -> list[tuple[str, str, int]]:
        with self._lock:
            return [e for e in self.log if method is None or e[0] == method]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
