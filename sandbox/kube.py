"""The Kubernetes side of the sandbox node: its kubelet's ``Node`` object and what ``talosctl health`` checks of it.

A kubelet registers a ``Node`` named after the machine's hostname, with its addresses and a ``Ready`` condition,
and keeps it fresh while it runs. The sandbox's "kubelet" writes that object into the node's etcd whenever etcd
starts on the configured node (``sandbox.node.Node._run_etcd``), at ``/registry/minions/<hostname>``, the key
kube-apiserver stores Nodes under (resource ``nodes`` is stored with the prefix ``minions``: kubernetes v1.34
pkg/kubeapiserver/default_storage_factory_builder.go ``SpecialDefaultResourcePrefixes``). The value is JSON, which kube-apiserver can store too
(``--storage-media-type`` accepts ``application/json``); the sandbox's seed objects may use the protobuf encoding.

On AWS the hostname comes from IMDS (``ip-10-0-1-10.ec2.internal``, talos v1.13.9
internal/app/machined/pkg/runtime/v1alpha1/platform/aws/aws.go:166-175), so a machine with a new private IP is a
new Node, and the restored etcd still holds the old one. No kubelet posts for the old one, so the node lifecycle
controller sets its Ready condition to Unknown once the grace period passes (kubernetes v1.34
pkg/controller/nodelifecycle/node_lifecycle_controller.go ``tryUpdateNodeHealth``, "Kubelet stopped posting node
status."); the sandbox reads any Node that is not the current machine's that way.

``talosctl health`` lists the Nodes twice (talos v1.13.9 pkg/cluster/check/default.go:26-34,106-108):
"all k8s nodes to report" matches them against the nodes it was given by IP (pkg/cluster/check/kubernetes.go:30-78,
pkg/cluster/cluster.go:101-129 ``NodesMatch``: ``can't find expected node with IPs %q``, ``unexpected nodes with IPs
%q``) and "all k8s nodes to report ready" wants every Node's Ready condition True (kubernetes.go:216-245: ``some
nodes are not ready: %v``).
"""

from __future__ import annotations

import json

from sandbox import etcd

NODES_PREFIX = "/registry/minions/"
LEASES_PREFIX = "/registry/leases/kube-node-lease/"


def aws_hostname(private_ip: str) -> str:
    """The hostname EC2's IMDS reports for a private IP, without the domain: ``ip-10-0-1-10``."""
    return "ip-" + private_ip.replace(".", "-")


def node_object(hostname: str, private_ip: str, now: str) -> dict:
    """The Node a running kubelet keeps: InternalIP (its ``--node-ip``, the routed private IP), Hostname, Ready=True.
    No ExternalIP: without a cloud-controller-manager the kubelet reports only these two (kubernetes v1.34
    pkg/kubelet/nodestatus/setters.go ``NodeAddress``)."""
    addresses = [{"type": "InternalIP", "address": private_ip}, {"type": "Hostname", "address": hostname}]
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": hostname, "labels": {"kubernetes.io/hostname": hostname,
                                                  "node-role.kubernetes.io/control-plane": ""}},
        "spec": {},
        "status": {"addresses": addresses,
                   "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                   "message": "kubelet is posting ready status", "lastHeartbeatTime": now}]},
    }


def register(endpoint: str, hostname: str, private_ip: str, now: str) -> None:
    etcd.put(endpoint, NODES_PREFIX + hostname, json.dumps(node_object(hostname, private_ip, now), sort_keys=True))


def decode(key: str, value: bytes) -> dict:
    """A stored Node: JSON as the sandbox's kubelet writes it; anything else (a protobuf seed object) by name only."""
    try:
        obj = json.loads(value)
    except (UnicodeDecodeError, ValueError):
        obj = None
    if not isinstance(obj, dict):
        obj = {"apiVersion": "v1", "kind": "Node", "metadata": {}, "status": {}}
    obj.setdefault("metadata", {}).setdefault("name", key.removeprefix(NODES_PREFIX))
    return obj


def list_nodes(endpoint: str) -> list[dict]:
    return [decode(k, v) for k, v in sorted(etcd.get_prefix(endpoint, NODES_PREFIX).items())]


def node_ips(node: dict) -> list[str]:
    """InternalIP and ExternalIP addresses, as K8sAllNodesReportedAssertion collects them."""
    return [a.get("address", "") for a in (node.get("status") or {}).get("addresses") or []
            if a.get("type") in ("InternalIP", "ExternalIP")]


def _go_q(items: list[str]) -> str:
    """Go's ``%q`` of a slice: ``["a" "b"]``."""
    return "[" + " ".join(json.dumps(i) for i in items) + "]"


def _ip_key(ip: str) -> tuple:
    import ipaddress

    try:
        return (0, ipaddress.ip_address(ip))
    except ValueError:
        return (1, ip)


def nodes_reported(nodes: list[dict], expected_ips: list[str]) -> str | None:
    """``cluster.NodesMatch``: None, or its error."""
    actual = [set(node_ips(n)) for n in nodes]
    for ip in expected_ips:
        hit = next((i for i, ips in enumerate(actual) if ip in ips), None)
        if hit is None:
            return f"can't find expected node with IPs {_go_q([ip])}"
        actual.pop(hit)
    if actual:
        unexpected = sorted((ip for ips in actual for ip in ips), key=_ip_key)
        return f"unexpected nodes with IPs {_go_q(unexpected)}"
    return None


def nodes_ready(nodes: list[dict], current_hostname: str | list[str]) -> str | None:
    """``K8sAllNodesReadyAssertion``: None, or its error. Only the current machine's kubelet posts (on a multi-node
    sandbox: every machine that is up, ``current_hostname`` a list); any other Node reads Ready=Unknown (the node
    lifecycle controller's verdict on a kubelet that stopped posting)."""
    live = {current_hostname} if isinstance(current_hostname, str) else set(current_hostname)
    not_ready = []
    for n in nodes:
        name = n["metadata"]["name"]
        for cond in (n.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Ready":
                status = cond.get("status") if name in live else "Unknown"
                if status != "True":
                    not_ready.append(name)
                break
    return f"some nodes are not ready: [{' '.join(not_ready)}]" if not_ready else None
