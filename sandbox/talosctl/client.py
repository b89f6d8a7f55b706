"""Client side: the talosconfig, the node dialed and the credentials sent (cmd/talosctl/pkg/talos/global/client.go),
and how a failed call is printed (pkg/machinery/client/reply.go)."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.node import Auth, Node, NodeError, TransportError


class CommandError(Exception):
    """A failed command: the message talosctl prints, exit 1."""


@dataclass
class Target:
    node: Node
    addr: str  # the address dialed: the endpoint, or with --insecure the node itself
    auth: Auth
    endpoints: list[str] = field(default_factory=list)
    md: str | None = None  # the `nodes` metadata sent with an authenticated call (apid routes by it)

    @property
    def shown(self) -> str:
        """The node a response names (talosctl prints the node it asked for)."""
        return self.md or self.addr


def _host(addr: str) -> str:
    a = addr.strip()
    if a.startswith("[") and "]" in a:
        return a[1 : a.index("]")]
    if a.count(":") == 1:
        return a.split(":", 1)[0]
    return a


def _load_talosconfig(values: dict) -> tuple[dict, str] | None:
    import yaml

    path = values["talosconfig"] or os.environ.get("TALOSCONFIG") or str(Path.home() / ".talos" / "config")
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CommandError(f"failed to read config: {exc}") from exc
    try:
        cfg = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CommandError(f"failed to parse config: {exc}") from exc
    if not isinstance(cfg, dict):
        raise CommandError("failed to parse config: not a mapping")
    return cfg, path


def target(values: dict, *, insecure: bool) -> Target:
    """Who talosctl dials and what it asks for (cmd/talosctl/pkg/talos/global/client.go): an authenticated call
    dials the first endpoint and names the node in the `nodes` metadata; with --insecure (maintenance mode,
    WithClientMaintenance) it dials the --nodes address itself and ignores the endpoints."""
    node = Node(_sandbox_dir())
    loaded = _load_talosconfig(values)
    ctx: dict = {}
    if loaded is not None:
        cfg, path = loaded
        name = values["context"] or cfg.get("context") or ""
        contexts = cfg.get("contexts") or {}
        if name and name not in contexts:
            raise CommandError(f'context "{name}" is not defined in "talosconfig"')
        ctx = contexts.get(name) or {}
    elif values["context"]:
        raise CommandError(f'context "{values["context"]}" is not defined in "talosconfig"')
    if loaded is None and not insecure:
        path = values["talosconfig"] or os.environ.get("TALOSCONFIG") or str(Path.home() / ".talos" / "config")
        raise CommandError(f"failed to open config file {path!r}: open {path}: no such file or directory")
    nodes = list(values["nodes"]) or list(ctx.get("nodes") or [])
    endpoints = list(values["endpoints"]) or list(ctx.get("endpoints") or [])
    if insecure:
        if not nodes:
            raise CommandError("nodes are not set for the command: please use `--nodes` flag or configuration file "
                               "to set the nodes to run the command against")
        if len(nodes) > 1:
            raise CommandError("this sandbox talosctl supports one node per call; got nodes " + ", ".join(nodes))
        addr = _host(nodes[0])
        return Target(node.for_call(addr, None), addr, Auth(insecure=True), endpoints)
    if not endpoints:
        raise CommandError("failed to determine endpoints")
    if not nodes:
        raise CommandError(
            "nodes are not set for the command: please use `--nodes` flag or configuration file to set the nodes "
            "to run the command against"
        )
    if len(nodes) > 1:
        raise CommandError("this sandbox talosctl supports one node per call; got nodes " + ", ".join(nodes))
    addr, md = _host(endpoints[0]), _host(nodes[0])
    # The node the call runs on: the one `--nodes` names (the endpoint's apid forwards to it), Node.for_call.
    return Target(node.for_call(addr, md), addr, _auth(node, ctx), endpoints, md=md)


def _auth(node: Node, ctx: dict) -> Auth:
    from sandbox.pki import ClusterSecrets, verify_client_cert

    ca, crt = ctx.get("ca"), ctx.get("crt")
    if not ca or not crt or not ctx.get("key"):
        raise CommandError("talosconfig context has no ca, crt or key: a client certificate is required")
    secrets = ClusterSecrets.load(node.paths.secrets)
    roles = None
    try:
        own = _load_talosconfig({"talosconfig": str(node.paths.talosconfig)})
        own_ctx = next(iter((own[0].get("contexts") or {}).values())) if own else {}
    except CommandError:
        own_ctx = {}
    if ca == secrets.os_ca_crt:
        if crt == own_ctx.get("crt"):
            roles = ["os:admin"]
        else:
            try:
                roles = verify_client_cert(base64.b64decode(ca), base64.b64decode(crt))
            except ValueError:
                roles = None
    return Auth(insecure=False, ca=ca, crt=crt, roles=roles)


def _sandbox_dir() -> str:
    d = os.environ.get("TALOS_SANDBOX_DIR")
    if not d:
        raise CommandError("TALOS_SANDBOX_DIR is not set: run the sandbox's bin/talosctl wrapper")
    return d


def _rpc(prefix: str, exc: NodeError | TransportError, t: Target | None = None) -> CommandError:
    """How talosctl prints a failed call. An error from the node behind apid (every authenticated call names a
    node, and apid proxies it: director.go) comes back as metadata, which the client turns into a multierror
    (pkg/machinery/client/reply.go; hashicorp/go-multierror's list format); a failure to reach the endpoint is a
    plain gRPC error."""
    if t is not None and t.md and isinstance(exc, NodeError):
        return CommandError(f"{prefix}: 1 error occurred:\n\t* {t.md}: {exc}\n\n")
    return CommandError(f"{prefix}: {exc}")
