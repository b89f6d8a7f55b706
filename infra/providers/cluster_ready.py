"""ClusterReady: the first ``pulumi up`` waits until the Kubernetes API answers ``/readyz`` with 200.

Why: the Talos provider's Bootstrap returns as soon as the node accepts the Bootstrap call, and its Kubeconfig only
asks apid for a kubeconfig (terraform-provider-talos v0.11.0, ``pkg/talos/talos_machine_bootstrap_resource.go``,
``talos_cluster_kubeconfig_resource.go``). The API server is still pulling images then, so pulumi-kubernetes would
mark the cluster unreachable and the proving snapshot would race etcd's start. Sidero's AWS example waits with the
``talos_cluster_health`` *data source* (siderolabs/contrib ``examples/terraform/aws/main.tf``); as a Pulumi invoke that
would run, and block, at every preview. This resource waits in ``create`` only: previews never call ``create``,
``diff`` reports nothing unless the instance identity changes (then it is replaced, and a new node is waited for
again), and ``read`` (``pulumi refresh``) does no network I/O, so a refresh while the cluster is down still works.

The probe is ``GET /readyz`` with the admin kubeconfig's client certificate over TLS verified against the
kubeconfig's CA (the API server's ``/readyz`` includes its etcd check, so a 200 also means etcd answers).

Three control-plane nodes (``members``): it waits for the cluster endpoint (the load balancer), then for **every**
member: its own API server's ``/readyz`` at its Elastic IP (in the API server's certificate: infra/talos.py
``base_patch``), then its Kubernetes ``Node`` Ready. On Talos each kube-apiserver talks to the etcd member on its own
node only (talos v1.13.9 ``internal/app/machined/pkg/controllers/k8s/control_plane.go``: ``EtcdServers`` is
``https://127.0.0.1:2379``), and ``/readyz``'s etcd check reads through it, so a 200 from every node's API server
means every node's etcd member has joined and answers. A changed member list or a replaced member (its instance id)
is an *update* that waits again, never a replacement.

Serialization (reference/pulumi.md): the provider holds no attributes and builds every client inside its methods.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)

from dr.adapters import tls
from dr.core.timefmt import human_duration

READYZ_PATH = "/readyz"
NODES_PATH = "/api/v1/nodes"
# A fresh Talos node pulls the control-plane images after bootstrap: minutes, not seconds.
DEFAULT_TIMEOUT_SECONDS = 1200
DEFAULT_INTERVAL_SECONDS = 5
PROBE_TIMEOUT_SECONDS = 10.0
# Inputs that, when changed, mean "a different node": wait again for it.
REPLACE_KEYS = ("node_identity",)
# Inputs that, when changed, mean "other members" (a node added, or replaced): wait again, updating in place.
WAIT_KEYS = ("members",)


class ClusterNotReady(RuntimeError):
    """The API did not report ready in time, or cannot be trusted; the message is one line with the next step."""


@dataclass(frozen=True)
class ApiAccess:
    server: str  # https://host:port
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @property
    def host(self) -> str:
        return urlsplit(self.server).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.server).port or 443


def _named(items: Any, name: str, kind: str) -> dict[str, Any]:
    for item in items or []:
        if isinstance(item, dict) and item.get("name") == name:
            return item.get(kind) or {}
    raise ClusterNotReady(f"the kubeconfig has no {kind} named {name!r}")


def kubeconfig_access(kubeconfig: str) -> ApiAccess:
    """The current context's server, CA and client certificate (the ``*-data`` fields Talos writes)."""
    import yaml

    try:
        doc = yaml.safe_load(kubeconfig)
    except yaml.YAMLError as exc:
        raise ClusterNotReady(f"the kubeconfig is not YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ClusterNotReady("the kubeconfig is not a YAML mapping")
    contexts = doc.get("contexts") or []
    current = doc.get("current-context") or (contexts[0].get("name") if contexts else None)
    if not current:
        raise ClusterNotReady("the kubeconfig has no context")
    ctx = _named(contexts, current, "context")
    cluster = _named(doc.get("clusters"), ctx.get("cluster", ""), "cluster")
    user = _named(doc.get("users"), ctx.get("user", ""), "user")
    try:
        access = ApiAccess(
            server=str(cluster["server"]),
            ca_pem=base64.b64decode(cluster["certificate-authority-data"]),
            cert_pem=base64.b64decode(user["client-certificate-data"]),
            key_pem=base64.b64decode(user["client-key-data"]),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ClusterNotReady(
            f"the kubeconfig's context {current!r} lacks a server, CA or client certificate ({exc})"
        ) from exc
    if urlsplit(access.server).scheme != "https" or not access.host:
        raise ClusterNotReady(f"the kubeconfig's server {access.server!r} is not an https:// URL")
    return access


def tls_context(access: ApiAccess) -> ssl.SSLContext:
    """Verify the server against the kubeconfig's CA (hostname or IP SAN) and present the client certificate."""
    return tls.client_context(access.ca_pem, access.cert_pem, access.key_pem)


def probe(access: ApiAccess, ctx: ssl.SSLContext, timeout: float = PROBE_TIMEOUT_SECONDS) -> tuple[int, str]:
    """One ``GET /readyz``: (HTTP status, first line of the body). Connection errors raise ``OSError``;
    a server certificate that does not verify raises ``ssl.SSLCertVerificationError``."""
    status, body = _get(access, ctx, READYZ_PATH, "text/plain", 4096, timeout)
    return status, (body.strip().splitlines() or [""])[0][:200]


MAX_NODES_BODY = 4 * 1024 * 1024  # a NodeList of three nodes is tens of KiB


def _get(access: ApiAccess, ctx: ssl.SSLContext, path: str, accept: str, limit: int,
         timeout: float) -> tuple[int, str]:
    conn = http.client.HTTPSConnection(access.host, access.port, context=ctx, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": accept})
        resp = conn.getresponse()
        return resp.status, resp.read(limit).decode(errors="replace")
    finally:
        conn.close()


def not_ready_nodes(node_list: Any, addresses: Sequence[str]) -> list[str]:
    """Of ``addresses`` (the members' private IPs), those without a Node whose InternalIP it is and whose ``Ready``
    condition is True (Kubernetes API: Node ``status.addresses``, ``status.conditions``)."""
    ready: set[str] = set()
    for node in (node_list or {}).get("items") or []:
        status = node.get("status") or {} if isinstance(node, dict) else {}
        is_ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                       for c in status.get("conditions") or [] if isinstance(c, dict))
        if is_ready:
            ready |= {str(a.get("address")) for a in status.get("addresses") or []
                      if isinstance(a, dict) and a.get("type") == "InternalIP"}
    return [a for a in addresses if a not in ready]


def probe_nodes(access: ApiAccess, ctx: ssl.SSLContext, addresses: Sequence[str],
                timeout: float = PROBE_TIMEOUT_SECONDS) -> tuple[int, str]:
    """``GET /api/v1/nodes``: (200, "") when every address is a Ready node's InternalIP, else (status or 503, what is
    missing). Connection errors raise as ``probe`` does."""
    status, body = _get(access, ctx, NODES_PATH, "application/json", MAX_NODES_BODY, timeout)
    if status != 200:
        return status, (body.strip().splitlines() or [""])[0][:200]
    try:
        missing = not_ready_nodes(json.loads(body), addresses)
    except (ValueError, AttributeError) as exc:
        return 503, f"the node list is not JSON ({exc})"
    return (200, "") if not missing else (503, f"no Ready node with InternalIP {', '.join(missing)} yet")


def wait_until_ready(
    access: ApiAccess,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    poll_seconds: float = DEFAULT_INTERVAL_SECONDS,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] | None = None,
    check: Callable[[ApiAccess, ssl.SSLContext, float], tuple[int, str]] = probe,
    path: str = READYZ_PATH,
) -> tuple[int, float]:
    """Poll until ``/readyz`` (or ``check``, which GETs ``path``) answers 200; returns (attempts, seconds waited).
    Raises ``ClusterNotReady``."""
    ctx = tls_context(access)
    start = clock()
    deadline = start + timeout_seconds
    attempts = 0
    last = "no answer yet"
    url = f"{access.server}{path}"
    while True:
        attempts += 1
        remaining = deadline - clock()
        try:
            status, body = check(access, ctx, max(1.0, min(PROBE_TIMEOUT_SECONDS, remaining)))
        except ssl.SSLCertVerificationError as exc:
            # Nothing else listens on 6443 while the API server starts: a certificate that does not verify will
            # not start verifying by waiting.
            raise ClusterNotReady(
                f"{url}: the API server's certificate does not verify against the kubeconfig's CA "
                f"({exc.verify_message or exc}); check that clusterEndpoint's address is this stack's Elastic IP "
                "(with three nodes: its load balancer, and each node's own Elastic IP)"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:  # refused, timed out, reset, TLS not up yet
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200:
                return attempts, clock() - start
            last = f"HTTP {status} {body}".strip()
        if log and attempts % 12 == 1:
            log(f"waiting for {url} to answer 200 ({last})")
        if clock() + poll_seconds > deadline:
            raise ClusterNotReady(
                f"{url} did not answer 200 within {human_duration(timeout_seconds)} ({attempts} attempts; last: {last}); "
                "check the node (`talosctl --talosconfig .talos/talosconfig health`) and that this machine's address "
                "is in adminCidrs (port 6443), then run `pulumi up` again"
            )
        sleep(poll_seconds)


def wait_for_members(
    access: ApiAccess,
    members: Sequence[dict[str, Any]],
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    poll_seconds: float = DEFAULT_INTERVAL_SECONDS,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] | None = None,
) -> tuple[int, float]:
    """Wait for the cluster endpoint, then each member's own API server (``server``), then every member's Node
    Ready (``address``), all within one ``timeout_seconds``; returns (attempts, seconds waited)."""
    start = clock()
    attempts = 0

    def left() -> float:
        return max(poll_seconds, timeout_seconds - (clock() - start))

    servers = [access] + [dataclasses.replace(access, server=str(m["server"])) for m in members]
    for target in servers:
        n, _ = wait_until_ready(target, left(), poll_seconds, clock=clock, sleep=sleep, log=log)
        attempts += n
    addresses = [str(m["address"]) for m in members]
    n, _ = wait_until_ready(access, left(), poll_seconds, clock=clock, sleep=sleep, log=log,
                            check=lambda a, c, t: probe_nodes(a, c, addresses, t), path=NODES_PATH)
    return attempts + n, clock() - start


def _is_unknown(value: Any) -> bool:
    from pulumi.runtime import rpc

    return isinstance(value, str) and value == rpc.UNKNOWN


def _info(msg: str) -> None:
    try:
        pulumi.log.info(msg)
    except Exception:  # pragma: no cover - no engine attached: the provider process prints to stderr
        pass


class ClusterReadyProvider(ResourceProvider):
    """See the module docstring. Stateless: pickled by reference."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = []
        kubeconfig = news.get("kubeconfig")
        if not _is_unknown(kubeconfig) and not (isinstance(kubeconfig, str) and kubeconfig.strip()):
            failures.append(CheckFailure("kubeconfig", "must be the cluster's admin kubeconfig (YAML)"))
        for key in ("timeout_seconds", "poll_seconds"):
            value = news.get(key)
            if not _is_unknown(value) and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
                failures.append(CheckFailure(key, "must be a positive number of seconds"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # Only a new node needs a new wait; a renewed kubeconfig or another timeout is not a change (so later
        # `pulumi up`s never block here). An unknown identity (a replacement planned in preview) differs too.
        replaces = [k for k in REPLACE_KEYS if olds.get(k) != news.get(k)]
        waits = [k for k in WAIT_KEYS if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(replaces or waits), replaces=replaces, stables=[],
                          delete_before_replace=False)

    def _wait(self, props: dict[str, Any]) -> dict[str, Any]:
        access = kubeconfig_access(props["kubeconfig"])
        timeout = float(props.get("timeout_seconds") or DEFAULT_TIMEOUT_SECONDS)
        poll = float(props.get("poll_seconds") or DEFAULT_INTERVAL_SECONDS)
        members = props.get("members")
        if members:
            attempts, waited = wait_for_members(access, members, timeout, poll, log=_info)
            _info(f"{access.server}{READYZ_PATH} and all {len(members)} members answered after "
                  f"{human_duration(waited)} ({attempts} attempts)")
        else:
            attempts, waited = wait_until_ready(access, timeout, poll, log=_info)
            _info(f"{access.server}{READYZ_PATH} answered 200 after {human_duration(waited)} ({attempts} attempts)")
        # No kubeconfig in the outputs: state keeps it only as the (secret) input.
        outs = {
            "node_identity": props.get("node_identity"),
            "server": access.server,
            "timeout_seconds": props.get("timeout_seconds"),
            "poll_seconds": props.get("poll_seconds"),
            "attempts": attempts,
        }
        if members is not None:
            outs["members"] = members
        return outs

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._wait(props)
        return CreateResult(id_=f"{outs['server']}{READYZ_PATH}", outs=outs)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # Other members (a node added or replaced): wait for them all. Anything else (e.g. a changed serialized
        # provider): keep what is known, never wait.
        if any(olds.get(k) != news.get(k) for k in WAIT_KEYS):
            return UpdateResult(outs=self._wait(news))
        keep = {k: olds.get(k) for k in ("server", "attempts", *(["members"] if "members" in olds else []))}
        return UpdateResult(outs={**keep, **{k: news.get(k) for k in ("node_identity", "timeout_seconds",
                                                                          "poll_seconds")}})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=dict(props))  # refresh never polls: the cluster may be down on purpose

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


@dataclass
class ClusterReadyArgs:
    kubeconfig: pulumi.Input[str]
    # The EC2 instance id: a new instance is a new cluster to wait for.
    node_identity: pulumi.Input[str]
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    poll_seconds: int = DEFAULT_INTERVAL_SECONDS
    # Three nodes: each member's {"address": private IP, "server": https://<Elastic IP>:6443, "identity": instance
    # id}. None (one node): not sent at all, so a one-node stack's inputs are what they always were.
    members: Sequence[pulumi.Input[dict[str, Any]]] | None = None


class ClusterReady(pulumi.dynamic.Resource):
    """Created once the Kubernetes API answers ``/readyz``; depend on it instead of on the bootstrap."""

    server: pulumi.Output[str]
    attempts: pulumi.Output[int]

    def __init__(self, name: str, args: ClusterReadyArgs, opts: pulumi.ResourceOptions | None = None):
        props: dict[str, Any] = {
            "kubeconfig": pulumi.Output.secret(args.kubeconfig),
            "node_identity": args.node_identity,
            "timeout_seconds": args.timeout_seconds,
            "poll_seconds": args.poll_seconds,
            "server": None,
            "attempts": None,
        }
        if args.members is not None:
            props["members"] = list(args.members)
        super().__init__(ClusterReadyProvider(), name, props, opts)
