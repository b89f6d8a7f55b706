"""ClusterReady with three members, against real mutual-TLS HTTPS servers on loopback (one for the load balancer's
address, one per member's own API server): it waits for the endpoint, for each member's ``/readyz``, then for every
member's Node Ready in ``GET /api/v1/nodes`` (Kubernetes NodeList: ``status.addresses`` InternalIP,
``status.conditions`` Ready)."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from infra.providers import cluster_ready as cr
from tests.infra.providers.test_cluster_ready import Pki, _pem_key, props

ADDRESSES = ["10.0.1.10", "10.0.2.10", "10.0.3.10"]


def node(address: str, ready: bool = True, kind: str = "InternalIP") -> dict:
    return {"metadata": {"name": f"ip-{address.replace('.', '-')}.ec2.internal"},
            "status": {"addresses": [{"type": kind, "address": address}, {"type": "Hostname", "address": "x"}],
                       "conditions": [{"type": "MemoryPressure", "status": "False"},
                                      {"type": "Ready", "status": "True" if ready else "False"}]}}


class ApiServer:
    """HTTPS on a free loopback port requiring the CA's client certificate; ``answer(path, n)`` gives (status, body)
    for the n-th request to ``path`` (from 1)."""

    def __init__(self, pki: Pki, tmp: Path, answer: Callable[[str, int], tuple[int, str]]):
        self.paths: list[str] = []
        for name, data in (("srv.crt", pki.pem(pki.server_cert)), ("srv.key", _pem_key(pki.server_key)),
                           ("ca.crt", pki.pem(pki.ca))):
            (tmp / name).write_bytes(data)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tmp / "srv.crt", tmp / "srv.key")
        ctx.load_verify_locations(tmp / "ca.crt")
        ctx.verify_mode = ssl.CERT_REQUIRED
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                owner.paths.append(self.path)
                status, body = answer(self.path, owner.paths.count(self.path))
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def cluster(tmp_path):
    """The endpoint (serves /readyz and the node list: two Ready nodes twice, then all three) and three members,
    the second of which answers 503 twice before 200."""
    pki = Pki()
    servers: list[ApiServer] = []

    def endpoint(path: str, n: int) -> tuple[int, str]:
        if path == cr.NODES_PATH:
            items = [node(ADDRESSES[0]), node(ADDRESSES[1]), node(ADDRESSES[2], ready=n > 2)]
            return 200, json.dumps({"kind": "NodeList", "items": items})
        return 200, "ok"

    def member(slow: int) -> Callable[[str, int], tuple[int, str]]:
        return lambda path, n: (200, "ok") if n > slow else (503, "[-]etcd failed: reason withheld")

    for i, answer in enumerate([endpoint, member(0), member(2), member(0)]):
        (tmp_path / str(i)).mkdir()
        servers.append(ApiServer(pki, tmp_path / str(i), answer))
    yield pki, servers
    for s in servers:
        s.close()


def members(servers) -> list[dict]:
    return [{"address": a, "server": s.url, "identity": f"i-{i}"} for i, (a, s) in enumerate(zip(ADDRESSES, servers, strict=True))]


def test_create_waits_for_every_members_api_server_and_every_node_ready(cluster):
    pki, (lb, *nodes) = cluster
    res = cr.ClusterReadyProvider().create(props(pki.kubeconfig(lb.url), members=members(nodes)))
    assert nodes[0].paths == [cr.READYZ_PATH] and nodes[2].paths == [cr.READYZ_PATH]
    assert nodes[1].paths == [cr.READYZ_PATH] * 3, "the slow member is waited for"
    assert lb.paths == [cr.READYZ_PATH, cr.NODES_PATH, cr.NODES_PATH, cr.NODES_PATH], "until the third node is Ready"
    assert res.outs["attempts"] == 1 + 1 + 3 + 1 + 3 and res.outs["members"] == members(nodes)
    assert res.outs["server"] == lb.url


def test_a_member_whose_node_never_gets_ready_times_out_naming_it(tmp_path):
    pki = Pki()
    lb = ApiServer(pki, tmp_path, lambda path, n: (200, json.dumps({"items": [node(ADDRESSES[0]), node(ADDRESSES[1], ready=False)]}))
                   if path == cr.NODES_PATH else (200, "ok"))
    try:
        with pytest.raises(cr.ClusterNotReady) as info:
            cr.wait_for_members(cr.kubeconfig_access(pki.kubeconfig(lb.url)),
                                [{"address": a, "server": lb.url} for a in ADDRESSES[:2]], 0.5, 0.1)
    finally:
        lb.close()
    msg = str(info.value)
    assert f"{lb.url}{cr.NODES_PATH} did not answer 200" in msg
    assert "no Ready node with InternalIP 10.0.2.10 yet" in msg and "\n" not in msg


def test_new_members_are_an_update_that_waits_and_anything_else_never_waits(cluster):
    pki, (lb, *nodes) = cluster
    p = cr.ClusterReadyProvider()
    olds = {"node_identity": "i-0abc", "server": "https://192.0.2.1:1", "attempts": 3}
    grown = props(pki.kubeconfig(lb.url), members=members(nodes))
    diff = p.diff("id", olds, grown)
    assert diff.changes is True and diff.replaces == []
    outs = p.update("id", olds, grown).outs
    assert outs["members"] == members(nodes) and lb.paths and all(n.paths for n in nodes)
    # A replaced member (another instance id) waits again, in place.
    replaced = [*members(nodes)[:2], {**members(nodes)[2], "identity": "i-new"}]
    assert p.diff("id", outs, {**grown, "members": replaced}).replaces == []
    assert p.diff("id", outs, {**grown, "members": replaced}).changes is True
    # Same members: no change, and an update asked for anyway keeps what it knew without a request.
    assert p.diff("id", outs, grown).changes is False
    before = len(lb.paths)
    assert p.update("id", outs, grown).outs["members"] == members(nodes) and len(lb.paths) == before


@pytest.mark.parametrize("items,missing", [
    ([node(a) for a in ADDRESSES], []),
    ([node(ADDRESSES[0]), node(ADDRESSES[1], ready=False), node(ADDRESSES[2])], [ADDRESSES[1]]),
    ([node(ADDRESSES[0]), node(ADDRESSES[1], kind="ExternalIP")], [ADDRESSES[1], ADDRESSES[2]]),
    ([], ADDRESSES),
    ([{"status": None}, "junk"], ADDRESSES),
])
def test_not_ready_nodes(items, missing):
    assert cr.not_ready_nodes({"items": items}, ADDRESSES) == missing
