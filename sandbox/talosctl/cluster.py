"""Cluster-level commands: ``health`` (talosctl's check list, etcd members against ``--control-plane-nodes``,
the Kubernetes node checks) and ``kubeconfig`` (0600, merge or ``--force``)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from sandbox.node import NodeError, TransportError
from sandbox.talosctl.client import CommandError, Target, _host, _rpc, target

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


def _multierror(errors: list[str]) -> str:
    """hashicorp/go-multierror's list format."""
    head = "1 error occurred:" if len(errors) == 1 else f"{len(errors)} errors occurred:"
    return head + "".join(f"\n\t* {e}" for e in errors) + "\n\n"


def _service_problems(t: Target, cps: list[str]) -> list[str]:
    """ServiceHealthAssertion("etcd") on every control-plane node (pkg/cluster/check/service.go:75-140)."""
    errors = []
    for ip in cps:
        n = t.node.for_call(t.addr, ip)
        if n.info.private_ip != ip:
            errors.append(f'{ip}: rpc error: code = Unavailable desc = connection error: desc = "transport: Error '
                          f'while dialing: dial tcp {ip}:50000: i/o timeout"')
            continue
        v = n.snapshot_state()
        if n.faults().get("unreachable") or not v.reachable:
            why = "i/o timeout" if v.phase in ("halted", "unbootable") else "connect: connection refused"
            errors.append(f'{ip}: rpc error: code = Unavailable desc = connection error: desc = "transport: Error '
                          f'while dialing: dial tcp {ip}:50000: {why}"')
        elif not v.etcd_running:
            msg = v.etcd_events[-1][2] if v.etcd_events else ""
            errors.append(f'{ip}: service "etcd" not in expected state "Running": current state [{v.etcd_state}] {msg}')
        elif v.etcd_health != "OK":
            errors.append(f"{ip}: service is not healthy: etcd")
    return errors


def _members_problem(t: Target, cps: list[str]) -> tuple[int, str] | None:
    """EtcdConsistentAssertion and EtcdControlPlaneNodesAssertion (pkg/cluster/check/etcd.go:25-128): every node's
    member list the same; every member's peer address a control-plane node's."""
    from urllib.parse import urlparse

    from sandbox import etcd

    lists = []
    for ip in cps:
        try:
            lists.append((ip, etcd.member_list(t.node.for_call(t.addr, ip).info.etcd_endpoint)))
        except etcd.EtcdFailure as exc:
            return 1, f"1 error occurred:\n\t* {ip}: rpc error: code = Unavailable desc = {exc}\n\n"
    known = {(m["name"], m["id"], m["is_learner"]) for m in lists[0][1]}
    for ip, members in lists[1:]:
        if len(members) != len(known):
            return 1, (f"{ip}: expected to have [{' '.join(sorted(k[0] for k in known))}] members, got "
                       f"[{' '.join(m['name'] for m in members)}]")
        for m in members:
            if (m["name"], m["id"], m["is_learner"]) not in known:
                return 1, f"{ip}: found unexpected etcd member {m['name']}"
    ips = [urlparse(u).hostname or "" for m in lists[0][1] for u in m["peer_urls"]]
    if not set(ips) <= set(cps):
        return 2, f"etcd member ips {_go_q(ips)} are not subset of control plane node ips {_go_q(cps)}"
    return None


def _go_q(items: list[str]) -> str:
    return "[" + " ".join(json.dumps(i) for i in items) + "]"


def _multi_health(t: Target, cps: list[str]) -> tuple[int, str] | None:
    """The first failing check on a multi-node sandbox, as (index in HEALTH_CHECKS, message), or None."""
    errors = _service_problems(t, cps)
    if errors:
        return 0, _multierror(errors)
    problem = _members_problem(t, cps)
    if problem is not None:
        return problem
    return t.node.k8s_problem(cps)


def _report(index: int, why: str, last: str | None) -> str:
    """Print the checks up to the failing one (once per new reason); returns the reason."""
    reason = f"{HEALTH_CHECKS[index]}: {why}"
    if reason != last:
        for check in HEALTH_CHECKS[:index]:
            print(f"{check}: OK", file=sys.stderr)
        print(reason, file=sys.stderr)
    return reason


def cmd_health(values: dict, args: list[str]) -> None:
    t = target(values, insecure=False)
    multi = t.node.multi
    # A multi-node cluster's control-plane nodes are discovered (every node of the sandbox) unless named.
    cps = list(values["control-plane-nodes"]) or ([n.info.private_ip for n in t.node.cluster()] if multi
                                                  else [t.shown])
    deadline = time.monotonic() + values["wait-timeout"]
    # The first call must connect and authenticate, as talosctl's server-side check does.
    try:
        t.node.machine_status(t.addr, t.auth, node=t.md)
    except (NodeError, TransportError) as exc:
        raise _rpc("error checking health", exc, t) from None
    print(f"discovered nodes: {json.dumps(cps)}", file=sys.stderr)
    if multi:
        _multi_loop(t, cps, deadline)
    else:
        _single_loop(t, cps, deadline)


def _multi_loop(t: Target, cps: list[str], deadline: float) -> None:
    last = None
    while True:
        problem = _multi_health(t, [_host(cp) for cp in cps])
        if problem is None:
            for check in HEALTH_CHECKS:
                print(f"{check}: OK", file=sys.stderr)
            return
        last = _report(*problem, last)
        if time.monotonic() >= deadline:
            raise CommandError("healthcheck error: rpc error: code = DeadlineExceeded desc = context deadline exceeded")
        time.sleep(0.1)


def _single_loop(t: Target, cps: list[str], deadline: float) -> None:
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
