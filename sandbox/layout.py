"""Where a sandbox keeps things, and its settings file ``<dir>/sandbox.json``.

Everything a sandbox has lives under its directory, so several can run at once and ``down`` finds what to stop.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from dr.adapters.fsutil import atomic_write

TALOS_VERSION = "v1.13.9"
KUBERNETES_VERSION = "v1.34.1"
# The node's two addresses, as on AWS (see sandbox/CONFORMANCE.md): the private IP is on its interface; the Elastic
# IP is NAT'd at the internet gateway and never on the interface. From the operator's machine only the public one is
# reachable. Both are loopback addresses here (Linux routes all of 127.0.0.0/8 to lo).
NODE_PRIVATE_IP = "127.0.0.2"
NODE_PUBLIC_IP = "127.0.0.3"
NODE_IP = NODE_PRIVATE_IP  # the address Talos and etcd know the node by
APID_PORT = 50000
KUBE_PORT = 6443
# The first node's hostname (the seed's Node, etcd's member name). A replaced instance takes the name EC2's IMDS gives
# its new private IP, ip-a-b-c-d (sandbox/kube.py aws_hostname), as Talos does on AWS.
NODE_HOSTNAME = "talos-sandbox-cp"
# Availability zones of nodes 1..3 (one node per zone, as the HA stack places them).
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")


def node_addresses(index: int) -> tuple[str, str]:
    """Node ``index`` (1-based): (private IP, Elastic IP) = 127.0.0.{2i}, 127.0.0.{2i+1}; node 1 keeps
    127.0.0.2 / 127.0.0.3."""
    return f"127.0.0.{2 * index}", f"127.0.0.{2 * index + 1}"


def node_hostname(index: int) -> str:
    """Node ``index``'s hostname, which is also its etcd member name (Talos names the member after the hostname)."""
    return NODE_HOSTNAME if index == 1 else f"{NODE_HOSTNAME}-{index}"


class Paths:
    """The files of one sandbox directory; ``index`` picks the node (1: ``<dir>/node``, i > 1: ``<dir>/node-<i>``)."""

    def __init__(self, root: str | os.PathLike[str], index: int = 1):
        self.root = Path(root).resolve()
        self.index = index

    def for_node(self, index: int) -> Paths:
        return Paths(self.root, index)

    @property
    def info(self) -> Path:
        return self.root / "sandbox.json"

    @property
    def node(self) -> Path:
        return self.root / "node" if self.index == 1 else self.root / f"node-{self.index}"

    def log(self, name: str) -> Path:
        """``logs/<name>.log`` for node 1, ``logs/<name>-<i>.log`` for node i."""
        return self.logs / (f"{name}.log" if self.index == 1 else f"{name}-{self.index}.log")

    @property
    def state(self) -> Path:
        return self.node / "state.json"

    @property
    def lock(self) -> Path:
        return self.node / "state.lock"

    @property
    def faults(self) -> Path:
        return self.node / "faults.json"

    @property
    def calls(self) -> Path:
        return self.node / "calls.jsonl"

    @property
    def etcd_data(self) -> Path:
        return self.node / "etcd"

    @property
    def machine_config(self) -> Path:
        """The machine config on the STATE partition (absent when STATE is wiped)."""
        return self.node / "state-partition" / "config.yaml"

    @property
    def recover_dir(self) -> Path:
        """/var/lib on the node (EPHEMERAL): where EtcdRecover puts the uploaded snapshot."""
        return self.node / "recover"

    @property
    def recover_snapshot(self) -> Path:
        """constants.EtcdRecoverySnapshotPath (/var/lib/etcd.snapshot)."""
        return self.recover_dir / "etcd.snapshot"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def talosctl(self) -> Path:
        return self.bin / "talosctl"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def talosconfig(self) -> Path:
        return self.root / "talosconfig"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs.json"

    @property
    def talos_dir(self) -> Path:
        """The DR commands' state folder for this sandbox (DR_TALOS_DIR in ``env``): snapshots, the journal, the lock
        and the kubeconfig a restore writes stay here, never in the checkout's own ``.talos/``."""
        return self.root / "talos"

    @property
    def env(self) -> Path:
        return self.root / "env"

    @property
    def controlplane(self) -> Path:
        return self.root / "controlplane.yaml"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.json"

    def controlplane_config_text(self) -> str:
        return self.controlplane.read_text()


@dataclass
class Info:
    """Settings of one sandbox, written once by ``up`` (pids of the S3 server included)."""

    dir: str
    cluster_name: str
    private_ip: str = NODE_PRIVATE_IP
    public_ip: str = NODE_PUBLIC_IP
    talos_version: str = TALOS_VERSION
    etcd_client_port: int = 0
    etcd_peer_port: int = 0
    etcd_name: str = "talos-sandbox-cp"
    s3_port: int | None = None
    s3_pid: int | None = None
    apid_pid: int | None = None  # the node's apid on the Elastic IP (sandbox/node_apid.py)
    apid_port: int = APID_PORT  # 50000 unless another sandbox's apid holds it
    hostname: str = NODE_HOSTNAME  # the node's hostname: its Kubernetes Node's name
    kube_pid: int | None = None  # the kube-apiserver stand-in (sandbox/kube_apiserver.py)
    kube_port: int = KUBE_PORT  # 6443 unless another sandbox's stand-in holds it
    bucket: str | None = None
    region: str = "us-east-1"
    reboot_seconds: float = 0.5
    bootstrap_not_ready_seconds: float = 0.3
    python: str = ""
    created_at: float = 0.0
    etcd_quota_bytes: int = 0  # the node's etcd --quota-backend-bytes; 0: etcd's default (2 GiB)
    age_recipients: list[str] = field(default_factory=list)  # `sandbox up --age-recipient`: the stack's ageRecipients
    extra: dict = field(default_factory=dict)
    # The address every etcd URL of this node uses: 127.0.0.1 on a one-node sandbox (as before); the node's private IP
    # on a multi-node one, so `etcd members` shows node addresses.
    etcd_host: str = "127.0.0.1"
    # Nodes 2..N of a multi-node sandbox (node 1 is the fields above): each a dict of the per-node fields in
    # PER_NODE (private_ip, public_ip, hostname, etcd_name, etcd_host, etcd ports, apid pid and port, instance id, zone).
    more_nodes: list[dict] = field(default_factory=list)
    index: int = 1  # which node this Info describes (for_node); never saved for i > 1
    instance_id: str = ""  # "" for node 1: Sandbox derives it from the secrets' fingerprint, as before

    @property
    def node_count(self) -> int:
        return 1 + len(self.more_nodes)

    def for_node(self, index: int) -> Info:
        """This sandbox's settings seen from node ``index``: its own addresses, hostname, etcd and apid."""
        if index == 1:
            return self
        if not 1 < index <= self.node_count:
            raise ValueError(f"the sandbox has {self.node_count} node(s), not a node {index}")
        return replace(self, **{k: v for k, v in self.more_nodes[index - 2].items() if k in PER_NODE}, index=index)

    def update_node(self, index: int, **fields) -> None:
        """Change node ``index``'s own fields (node 1: the top-level fields)."""
        if index == 1:
            for k, v in fields.items():
                setattr(self, k, v)
        else:
            self.more_nodes[index - 2].update(fields)

    @property
    def node_ip(self) -> str:
        """The node's own (private) address: what `--nodes` names and etcd advertises."""
        return self.private_ip

    @property
    def etcd_endpoint(self) -> str:
        return f"http://{self.etcd_host}:{self.etcd_client_port}"

    @property
    def apid_endpoint(self) -> str:
        """What a talosconfig's ``endpoints`` names: the Elastic IP, with the port only when it is not 50000."""
        return self.public_ip if self.apid_port == APID_PORT else f"{self.public_ip}:{self.apid_port}"

    @property
    def s3_endpoint(self) -> str | None:
        return f"http://127.0.0.1:{self.s3_port}" if self.s3_port else None

    def save(self, paths: Paths) -> None:
        if self.index != 1:
            raise ValueError("save the sandbox's Info (node 1's view), not a node's for_node() copy")
        atomic_write(paths.info, json.dumps(asdict(self), indent=2) + "\n", mode=0o644)

    @classmethod
    def load(cls, paths: Paths) -> Info:
        data = json.loads(paths.info.read_text())
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


PER_NODE = ("private_ip", "public_ip", "hostname", "etcd_name", "etcd_host", "etcd_client_port", "etcd_peer_port",
            "apid_pid", "apid_port", "instance_id")


def write_private(path: Path, content: str | bytes) -> None:
    """Write a secrets file 0600 (``dr.adapters.fsutil.atomic_write``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, content, mode=0o600)
