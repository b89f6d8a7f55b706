"""Cluster-level commands: ``health`` (talosctl's check list, etcd members against ``--control-plane-nodes``,
the Kubernetes node checks) and ``kubeconfig`` (0600, merge or ``--force``)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from sandbox.node import NodeError, TransportError
from sandbox.talosctl.client import CommandError, _host, _rpc, target

HEALTH_CHECKS = [
    "waiting for etcd to be healthy",
    "waiting for etcd members to be consistent across nodes",
    "waiting for etcd members to be control plane nodes",
    "waiting for apid to be ready",
    "waiting for all nodes memory sizes",
    "waiting for all nodes disk sizes",
    "waiting for kubelet to be healthy",
    "waiting for all nodes to finish boot sequence",
    "waiting for all k8s nodes to report",
    "waiting for all control plane static pods to be running",
    "waiting for all control plane components to be ready",
    "waiting for all k8s nodes to report ready",
    "waiting for kube-proxy to report ready",
    "waiting for coredns to report ready",
    "waiting for all k8s nodes to report schedulable",
]


def cmd_health(values: dict, args: list[str]) -> None:
    t = target(values, insecure=False)
    cps = list(values["control-plane-nodes"]) or [t.shown]
    deadline = time.monotonic() + values["wait-timeout"]
    # The first call must connect and authenticate, as talosctl's server-side check does.
    try:
        t.node.machine_status(t.addr, t.auth, node=t.md)
    except (NodeError, TransportError) as exc:
        raise _rpc("error checking health", exc, t) from None
    print(f"discovered nodes: {json.dumps(cps)}", file=sys.stderr)
    last = None
    while True:
        ok, reason = t.node.health()
        if ok and any(_host(cp) not in t.node.routed_addresses() for cp in cps):
            # pkg/cluster/check/etcd.go EtcdControlPlaneNodesAssertion: etcd advertises the node's routed
            # addresses only (controllers/etcd/spec.go), never the Elastic IP.
            ok = False
            members = json.dumps(list(t.node.routed_addresses()))
            reason = (f"etcd member ips {members} are not subset of control plane node ips "
                      f"{json.dumps([_host(cp) for cp in cps])}")
            if reason != last:
                print(f"{HEALTH_CHECKS[0]}: OK\n{HEALTH_CHECKS[1]}: OK\n{HEALTH_CHECKS[2]}: {reason}", file=sys.stderr)
                last = reason
        elif ok:
            # The Kubernetes checks list the Nodes (sandbox/kube.py): an extra or NotReady Node fails them.
            problem = t.node.k8s_problem([_host(cp) for cp in cps])
            if problem is None:
                for check in HEALTH_CHECKS:
                    print(f"{check}: OK", file=sys.stderr)
                return
            index, why = problem
            reason = f"{HEALTH_CHECKS[index]}: {why}"
            if reason != last:
                for check in HEALTH_CHECKS[:index]:
                    print(f"{check}: OK", file=sys.stderr)
                print(reason, file=sys.stderr)
                last = reason
        elif reason != last:
            print(f"{HEALTH_CHECKS[0]}: {reason}", file=sys.stderr)
            last = reason
        if time.monotonic() >= deadline:
            raise CommandError("healthcheck error: rpc error: code = DeadlineExceeded desc = context deadline exceeded")
        time.sleep(0.1)


def cmd_kubeconfig(values: dict, args: list[str]) -> None:
    import yaml

    t = target(values, insecure=False)
    try:
        text = t.node.kubeconfig(t.addr, t.auth, node=t.md)
    except (NodeError, TransportError) as exc:
        raise _rpc("error retrieving kubeconfig", exc, t) from None
    # No path: merge into ~/.kube/config, or write ./kubeconfig with --merge=false (talosctl's defaults).
    dest = args[0] if args else str(Path.home() / ".kube" / "config") if values["merge"] else "."
    if dest == "-":
        sys.stdout.write(text)
        return
    p = Path(dest)
    if p.is_dir():
        p = p / "kubeconfig"
    if values["force-context-name"]:
        doc = yaml.safe_load(text)
        old = doc["current-context"]
        for c in doc["contexts"]:
            if c["name"] == old:
                c["name"] = values["force-context-name"]
        doc["current-context"] = values["force-context-name"]
        text = yaml.safe_dump(doc, sort_keys=False)
    if p.exists():
        if values["merge"]:
            text = _merge_kubeconfig(p.read_text(), text)
        elif not values["force"]:
            raise CommandError(f'kubeconfig file already exists, use --force to overwrite: "{p}"')
    p.parent.mkdir(parents=True, exist_ok=True)
    part = p.with_name(p.name + ".part")
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(part, 0o600)
        os.replace(part, p)
    finally:
        part.unlink(missing_ok=True)


def _merge_kubeconfig(existing: str, new: str) -> str:
    import yaml

    base = yaml.safe_load(existing) or {}
    add = yaml.safe_load(new)
    for section in ("clusters", "users", "contexts"):
        items = [i for i in (base.get(section) or []) if i["name"] not in {a["name"] for a in add[section]}]
        base[section] = items + add[section]
    base["current-context"] = add["current-context"]
    base.setdefault("apiVersion", "v1")
    base.setdefault("kind", "Config")
    return yaml.safe_dump(base, sort_keys=False)
