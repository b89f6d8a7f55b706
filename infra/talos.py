"""Talos: the cluster PKI, the control-plane machine config, its apply, the bootstrap and the client configs."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumiverse_talos as talos
import yaml

from infra.config import DataVolume
from infra.providers.bootstrap_generation import BootstrapGeneration
from infra.providers.cluster_ready import ClusterReady, ClusterReadyArgs

AWS_TIME_SERVER = "169.254.169.123"  # Amazon Time Sync, reachable from every instance (Talos AWS docs)


def cluster_endpoint(address: str) -> str:
    return f"https://{address}:6443"


def base_patch(public_ip: str, api_sans: Sequence[str] | None = None) -> str:
    """The control-plane patch: the nodes run workloads; the node's Elastic IP is in its apid certificate, and the API
    server's certificate names ``api_sans`` (one node: its Elastic IP; three: the load balancer's DNS name and every
    node's Elastic IP, so each API server can also be reached directly, as ClusterReady does)."""
    return yaml.safe_dump(
        {
            "machine": {
                # apid's certificate must name the EIP: it is associated after boot, so Talos may not see it.
                "certSANs": [public_ip],
                "time": {"servers": [AWS_TIME_SERVER]},
            },
            "cluster": {
                "allowSchedulingOnControlPlanes": True,
                "apiServer": {"certSANs": list(api_sans) if api_sans is not None else [public_ip]},
            },
        },
        sort_keys=False,
    )


def ebs_serial(volume_id: str) -> str:
    """The NVMe serial number a Nitro instance reports for an EBS volume: its id without the dash."""
    return volume_id.replace("-", "")


def data_volume_patch(volume: DataVolume, volume_id: str) -> str:
    """A Talos ``UserVolumeConfig`` mounting the EBS volume at ``/var/mnt/<name>``.

    Not the legacy ``machine.disks``: that needs a device path, and on Nitro instances EBS volumes appear as
    NVMe devices whose numbering does not follow the attachment order. The selector matches the volume's
    serial number (its id), which is stable across reboots and instance replacement.
    """
    return yaml.safe_dump(
        {
            "apiVersion": "v1alpha1",
            "kind": "UserVolumeConfig",
            "name": volume.name,
            "provisioning": {
                "diskSelector": {"match": f'disk.serial == "{ebs_serial(volume_id)}"'},
                "minSize": "1GiB",
                "grow": True,
            },
            "filesystem": {"type": "xfs"},
        },
        sort_keys=False,
    )


@dataclass
class TalosNode:
    """One control-plane node as Talos sees it: the address to dial, the address to name, what identifies the
    instance (a new one is configured again), its data volumes' ids, and what must exist before it is configured."""

    public_ip: pulumi.Input[str]
    private_ip: pulumi.Input[str]
    identity: pulumi.Input[str]
    volume_ids: Mapping[str, pulumi.Input[str]] | None = None
    ready: Sequence[pulumi.Resource] = ()


@dataclass
class TalosClusterArgs:
    cluster_name: str
    talos_version: str
    kubernetes_version: str | None
    # Two addresses (siderolabs/contrib examples/terraform/aws/main.tf: `endpoint = public_ip, node = private_ip`):
    # the Elastic IP is NAT'd at the internet gateway and never on the interface, so it is only the address we dial.
    # apid forwards a request whose `node` is not one of its own addresses (talos v1.13.9
    # internal/app/apid/pkg/director/director.go), and from the node its own EIP leads back through the gateway.
    public_ip: pulumi.Input[str]
    private_ip: pulumi.Input[str]
    # Changing this (the EC2 instance id) replaces the config apply (a new instance is a blank node in maintenance
    # mode), and with one node also the bootstrap (infra/providers/bootstrap_generation.py).
    node_identity: pulumi.Input[str]
    data_volumes: Sequence[DataVolume] = ()
    volume_ids: Mapping[str, pulumi.Input[str]] | None = None
    # Resources that must exist before the config is applied (EIP association, volume attachments).
    node_ready: Sequence[pulumi.Resource] = ()
    # Three control-plane nodes: the other two (node 0 is the one above), and the load balancer's DNS name, which
    # becomes the cluster endpoint. Empty/None: one node, whose Elastic IP is the endpoint (as before).
    more_nodes: Sequence[TalosNode] = ()
    endpoint_host: pulumi.Input[str] | None = None

    def nodes(self) -> list[TalosNode]:
        """Every node, node 0 (the bootstrap node) first."""
        first = TalosNode(self.public_ip, self.private_ip, self.node_identity, self.volume_ids, self.node_ready)
        return [first, *self.more_nodes]


class TalosCluster(pulumi.ComponentResource):
    cluster_endpoint: pulumi.Output[str]
    machine_secrets_json: pulumi.Output[str]
    controlplane_config: pulumi.Output[str]
    talosconfig: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    provider_kubeconfig: pulumi.Output[str]
    ready: ClusterReady

    def __init__(self, name: str, args: TalosClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("talos-dr:talos:TalosCluster", name, None, opts)
        nodes = args.nodes()
        ip = pulumi.Output.from_input(args.public_ip)
        node_ip = pulumi.Output.from_input(args.private_ip)
        if len(nodes) == 1:
            endpoint = ip.apply(cluster_endpoint)
        else:  # the load balancer (infra/endpoint.py): it survives losing any one node
            endpoint = pulumi.Output.from_input(args.endpoint_host).apply(lambda host: cluster_endpoint(str(host)))
        invoke_opts = pulumi.InvokeOutputOptions(parent=self)

        # The PKI: losing it makes every Kubernetes Secret in every snapshot unreadable (the secretbox key is in
        # it), so `pulumi destroy` must not drop it from state.
        secrets = talos.machine.Secrets(
            f"{name}-secrets",
            talos_version=args.talos_version,
            opts=pulumi.ResourceOptions(
                parent=self, protect=True, additional_secret_outputs=["machineSecrets", "clientConfiguration"]
            ),
        )
        # Typed Any: the provider's signatures want ClientConfigurationArgs, and this Result output is what it reads.
        client_configuration: Any = secrets.client_configuration
        configs = [self._machine_config(args, secrets, endpoint, nodes, i, invoke_opts) for i in range(len(nodes))]

        # Every machine is a `controlplane` (never `init`), each configured on its own; only node 0 is bootstrapped.
        # replacement_trigger: a new instance id replaces the config applies even though their own
        # inputs (the EIP, the config) are unchanged. The provider's Bootstrap would otherwise never run again.
        # The provider dials `endpoint` and names `node` in the request (terraform-provider-talos v0.11.0
        # pkg/talos/util.go talosClientOp): in maintenance mode it skips certificate verification entirely
        # (InsecureSkipVerify, no fingerprint option), so the first apply is encrypted but not authenticated.
        applies = [self._apply(name if i == 0 else f"{name}-cp{i}", node, client_configuration, configs[i])
                   for i, node in enumerate(nodes)]
        # The bootstrap's trigger is not node 0's instance id: with three nodes, a rebuilt node 0 bootstrapped while
        # the other two run would start a second cluster (siderolabs/talos#5500). One node: its instance id, as
        # before; three: fixed once created (infra/providers/bootstrap_generation.py).
        generation = BootstrapGeneration(f"{name}-bootstrap-generation", [n.identity for n in nodes],
                                         opts=pulumi.ResourceOptions(parent=self))
        bootstrap = talos.machine.Bootstrap(
            f"{name}-bootstrap",
            node=node_ip,
            endpoint=ip,
            client_configuration=client_configuration,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[applies[0]],
                                        replacement_trigger=generation.generation),
        )
        kubeconfig = talos.cluster.Kubeconfig(
            f"{name}-kubeconfig",
            node=node_ip,
            endpoint=ip,
            client_configuration=client_configuration,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[bootstrap],
                # The nested client_key's secrecy should not depend on the bridge marking it Sensitive.
                additional_secret_outputs=["kubeconfigRaw", "kubernetesClientConfiguration"],
            ),
        )
        kubeconfig_raw: pulumi.Output[str] = kubeconfig.kubeconfig_raw
        if len(nodes) > 1:
            # A stack grown from one node keeps the kubeconfig it fetched then, which names node 0's Elastic IP:
            # point it at the load balancer (in the API server's certificate, base_patch).
            kubeconfig_raw = pulumi.Output.all(kubeconfig.kubeconfig_raw, endpoint).apply(
                lambda a: kubeconfig_with_server(a[0], a[1]))
        ready = self._ready(name, args, nodes, kubeconfig_raw, [bootstrap, kubeconfig, *applies[1:]])
        # talosctl dials `endpoints` (it balances across them and skips one that does not answer: talos v1.13.9
        # pkg/machinery/client/resolver/roundrobin.go) and sends `nodes` as the target: EIPs to dial, private IPs
        # as the targets.
        client = talos.client.get_configuration_output(
            cluster_name=args.cluster_name,
            client_configuration=client_configuration,
            endpoints=[n.public_ip for n in nodes],  # type: ignore[misc]  # Outputs in a list: resolved by the engine
            nodes=[n.private_ip for n in nodes],  # type: ignore[misc]
            opts=invoke_opts,
        )

        self.secrets = secrets
        self.config_apply = applies[0]
        self.config_applies = applies
        self.bootstrap = bootstrap
        self.kubeconfig_resource = kubeconfig
        self.ready = ready
        self.cluster_endpoint = endpoint
        self.machine_secrets_json = pulumi.Output.secret(secrets.machine_secrets.apply(secrets_bundle_json))
        self.controlplane_config = configs[0]
        self.talosconfig = pulumi.Output.secret(client.talos_config)
        self.kubeconfig = pulumi.Output.secret(kubeconfig_raw)
        # What the Kubernetes provider (infra/addons.py) gets: the kubeconfig as Talos fetched it, never rewritten.
        # Without `clusterIdentifier`, pulumi-kubernetes "uses heuristics to decide when a provider resource should be
        # replaced" (pulumi_kubernetes.Provider, cluster_identifier), and a kubeconfig naming another server reads as
        # another cluster: the provider, and with it Argo CD and every Secret, would be replaced. So a stack grown to
        # three nodes keeps reaching node 0's API server directly here (its Elastic IP stays in the certificate).
        self.provider_kubeconfig = pulumi.Output.secret(kubeconfig.kubeconfig_raw)
        self.register_outputs(
            {
                "cluster_endpoint": self.cluster_endpoint,
                "machine_secrets_json": self.machine_secrets_json,
                "controlplane_config": self.controlplane_config,
                "talosconfig": self.talosconfig,
                "kubeconfig": self.kubeconfig,
            }
        )

    def _machine_config(self, args: TalosClusterArgs, secrets: talos.machine.Secrets, endpoint: pulumi.Output[str],
                        nodes: Sequence[TalosNode], i: int, invoke_opts: pulumi.InvokeOutputOptions) -> pulumi.Output[str]:
        """Node ``i``'s controlplane machine config: its own Elastic IP in apid's certificate, its own data volumes."""
        node = nodes[i]
        ip = pulumi.Output.from_input(node.public_ip)
        patches: list[pulumi.Input[str]]
        if len(nodes) == 1:
            patches = [ip.apply(base_patch)]
        else:
            sans = pulumi.Output.all(args.endpoint_host, *(n.public_ip for n in nodes)).apply(list)
            patches = [pulumi.Output.all(ip, sans).apply(lambda a: base_patch(a[0], a[1]))]
        for vol in args.data_volumes:
            vol_id = pulumi.Output.from_input((node.volume_ids or {})[vol.name])
            patches.append(vol_id.apply(functools.partial(data_volume_patch, vol)))
        config = talos.machine.get_configuration_output(
            cluster_name=args.cluster_name,
            cluster_endpoint=endpoint,
            # The provider's typings admit only its Args classes and plain lists, but the engine resolves its own
            # Result outputs and Outputs nested in a list (client_configuration below is the same case).
            machine_secrets=secrets.machine_secrets,  # type: ignore[arg-type]
            machine_type="controlplane",
            config_patches=patches,  # type: ignore[arg-type]
            kubernetes_version=args.kubernetes_version,
            talos_version=args.talos_version,
            docs=False,
            examples=False,
            opts=invoke_opts,
        )
        return pulumi.Output.secret(config.machine_configuration)

    def _apply(self, name: str, node: TalosNode, client_configuration: Any,
               config: pulumi.Output[str]) -> talos.machine.ConfigurationApply:
        return talos.machine.ConfigurationApply(
            f"{name}-apply",
            node=node.private_ip,
            endpoint=node.public_ip,
            client_configuration=client_configuration,
            machine_configuration_input=config,
            # Deleting the superseded apply after a node replacement must never reset the new node at the same
            # address (reset is the provider's default of false today; say so explicitly).
            on_destroy={"reset": False, "graceful": True, "reboot": False},
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(node.ready), replacement_trigger=node.identity),
        )

    def _ready(self, name: str, args: TalosClusterArgs, nodes: Sequence[TalosNode], kubeconfig: pulumi.Output[str],
               after: Sequence[pulumi.Resource]) -> ClusterReady:
        """The first `up` waits here until the API server answers (three nodes: every node's API server, and every
        node Ready in Kubernetes); Kubernetes resources and the proving snapshot depend on `ready`, not on the
        bootstrap (which returns before etcd and the API server are up)."""
        members = None
        if len(nodes) > 1:
            members = [pulumi.Output.all(n.private_ip, n.public_ip, n.identity).apply(
                lambda a: {"address": a[0], "server": cluster_endpoint(a[1]), "identity": a[2]}) for n in nodes]
        return ClusterReady(
            f"{name}-ready",
            ClusterReadyArgs(kubeconfig=kubeconfig, node_identity=args.node_identity, members=members),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)),
        )


def kubeconfig_with_server(kubeconfig: str, server: str) -> str:
    """The kubeconfig with every cluster's ``server`` set to ``server`` (the cluster endpoint)."""
    doc = yaml.safe_load(kubeconfig)
    for item in (doc or {}).get("clusters") or []:
        if isinstance(item, dict) and isinstance(item.get("cluster"), dict):
            item["cluster"]["server"] = server
    return yaml.safe_dump(doc, sort_keys=False)


def talosctl_bundle(value: Any) -> Any:
    """The provider's ``machine_secrets`` in the layout of talosctl's secrets bundle (``talosctl gen secrets``).

    The bundle's keys are the provider's with underscores dropped (``bootstrap_token`` -> ``bootstraptoken``,
    ``k8s_aggregator`` -> ``k8saggregator``) and ``cert`` spelled ``crt``; unset parts are left out.
    """
    if isinstance(value, Mapping):
        renamed = {}
        for key, item in value.items():
            if item is None:
                continue
            new = str(key).replace("_", "").lower()
            renamed["crt" if new == "cert" else new] = talosctl_bundle(item)
        return renamed
    if isinstance(value, list | tuple):
        return [talosctl_bundle(v) for v in value]
    return value


def secrets_bundle_json(machine_secrets: Any) -> str:
    """The PKI bundle as JSON, usable as is with `talosctl gen config --with-secrets` (JSON is YAML)."""
    return json.dumps(talosctl_bundle(machine_secrets), sort_keys=True)
