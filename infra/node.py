"""Node: the Talos EC2 instance, its Elastic IP and its EBS data volumes.

The Elastic IP and the data volumes outlive the instance: replacing the instance moves the address and
reattaches the volumes, so the cluster keeps its endpoint (and the certificates naming it) and its data.

The private IP is fixed too, so a replaced node keeps its identity. EC2 gives an instance launched without one "an
available address from the subnet's IPv4 range" as its primary private IP, keeps it for the instance's life and
releases it on termination (Amazon EC2 User Guide, "Private IPv4 addresses"): a replacement would otherwise come up
with a new address. On AWS, Talos takes its hostname from IMDS (``hostname``: ``ip-10-0-1-10.ec2.internal``;
siderolabs/talos v1.13.9 internal/app/machined/pkg/runtime/v1alpha1/platform/aws/aws.go:166-175, metadata.go:72),
which follows the private IP, and the kubelet registers its Node under that hostname with that InternalIP. With the
address pinned, the replacement's kubelet finds its own Node in a restored etcd instead of leaving the old one
NotReady beside a new one (which `talosctl health` refuses: docs/RUNBOOK.md, Scenario 1).

Two instances cannot hold one private IP, so the instance is replaced delete-before-replace (Pulumi's
``deleteBeforeReplace``: "the resource is deleted before its replacement is created", docs "Resource options");
the node is down during a replacement anyway.

Existing stacks are never replaced by surprise: with ``nodePrivateIp`` unset the address is the subnet's 10th
(AWS reserves the first four), given only when the instance is created (``ignoreChanges``), so an instance made
before the pin keeps its address; pin it with ``pulumi config set nodePrivateIp "$(pulumi stack output
nodePrivateIp)"`` (the same address the instance has: no change). A set ``nodePrivateIp`` is honoured as given:
changing it replaces the instance, as changing an address must.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from dr.core.volume_snapshots import DATA_VOLUME_TAG, MOUNT_TAG, data_volume_tag_value
from infra.config import DataVolume

TALOS_AMI_OWNER = "540036508848"  # Sidero Labs' AWS account, which publishes the official Talos AMIs
# Talos's architecture names and the EC2 ones: Sidero's uploader publishes both for every release and region,
# named talos-<tag>-<region>-<arch> (talos v1.13.9 hack/cloud-image-uploader/aws.go `awsArchitectures`,
# options.go `Architectures: amd64, arm64`).
EC2_ARCHITECTURES = {"amd64": "x86_64", "arm64": "arm64"}


def talos_arch(supported_architectures: Sequence[str] | None, instance_type: str = "") -> str:
    """The Talos AMI architecture for an instance type, from EC2's ``supported_architectures`` for it.

    x86_64 wins when a type offers both (none does today); Graviton types offer only ``arm64``. Mac instances
    (``x86_64_mac``, ``arm64_mac``) and anything else are refused: there is no Talos AMI for them.
    """
    supported = set(supported_architectures or ())
    for arch, ec2 in EC2_ARCHITECTURES.items():
        if ec2 in supported:
            return arch
    raise ValueError(
        f"instanceType {instance_type or '?'} runs {', '.join(sorted(supported)) or 'no known architecture'}; "
        "Talos publishes AMIs for x86_64 and arm64 only: pick e.g. t3.medium or t4g.medium "
        "(`pulumi config set instanceType t3.medium`)"
    )


def talos_ami_name(talos_version: str, region: str, arch: str = "amd64") -> str:
    """The official AMI's exact name, e.g. ``talos-v1.13.9-us-east-1-amd64``."""
    return f"talos-{talos_version}-{region}-{arch}"


def talos_ami_name_regex(talos_version: str, region: str, arch: str = "amd64") -> str:
    """An anchored regex matching only the official AMI of this exact release, region and architecture."""
    return f"^{re.escape(talos_ami_name(talos_version, region, arch))}$"


@dataclass
class NodeArgs:
    cluster_name: str
    region: str
    talos_version: str
    instance_type: str
    subnet_id: pulumi.Input[str]
    security_group_ids: Sequence[pulumi.Input[str]]
    availability_zone: pulumi.Input[str]
    root_volume_size: int
    data_volumes: Sequence[DataVolume] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    private_ip: str | None = None  # the node's fixed address in the subnet (None: EC2 picks one)
    private_ip_set: bool = False  # the stack's config set it: a change replaces the instance
    # Which control-plane node (0: the bootstrap node, whose names and tags are those of the one-node stack).
    index: int = 0

    def label(self, what: str) -> str:
        """A Name tag: ``<cluster>-<what>`` for node 0 (as before there were three), ``<cluster>-<what>-<i>`` else."""
        return f"{self.cluster_name}-{what}" if self.index == 0 else f"{self.cluster_name}-{what}-{self.index}"


class Node(pulumi.ComponentResource):
    instance_id: pulumi.Output[str]
    public_ip: pulumi.Output[str]
    private_ip: pulumi.Output[str]
    ami_id: pulumi.Output[str]
    architecture: pulumi.Output[str]  # Talos's name: amd64 or arm64
    volume_ids: dict[str, pulumi.Output[str]]
    # The one tag only this stack's data volumes carry: what the DLM policy targets (infra/volume_snapshots.py).
    data_volume_tags: dict[str, str]

    def __init__(self, name: str, args: NodeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("talos-dr:node:Node", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = {**args.tags, "talos-dr/cluster": args.cluster_name}

        invoke = pulumi.InvokeOutputOptions(parent=self)
        # Graviton types (t4g, m7g, ...) need the arm64 AMI: ask EC2 what the type runs rather than guess from
        # its name (g4dn is x86_64, g5g is arm64).
        arch = aws.ec2.get_instance_type_output(instance_type=args.instance_type, opts=invoke).apply(
            lambda it: talos_arch(it.supported_architectures, args.instance_type)
        )
        ami = aws.ec2.get_ami_output(
            most_recent=True,
            owners=[TALOS_AMI_OWNER],
            name_regex=arch.apply(lambda a: talos_ami_name_regex(args.talos_version, args.region, a)),
            filters=arch.apply(lambda a: [
                {"name": "name", "values": [talos_ami_name(args.talos_version, args.region, a)]},
                {"name": "architecture", "values": [EC2_ARCHITECTURES[a]]},
            ]),
            opts=invoke,
        )

        # A new talosVersion must not silently replace the node (a new root disk means a fresh, empty etcd):
        # upgrade in place with `talosctl upgrade`, or rebuild on purpose with `pulumi up --replace <urn>`.
        ignored = ["ami"]
        if not args.private_ip_set:
            # The default address applies when the instance is created (a new stack, a replacement of a pinned
            # instance); an instance made before the pin keeps the address EC2 gave it (see the module docstring).
            ignored.append("privateIp")
        instance = aws.ec2.Instance(
            f"{name}-instance",
            ami=ami.id,
            instance_type=args.instance_type,
            subnet_id=args.subnet_id,  # the instance lands in the subnet's AZ, where the data volumes are
            private_ip=args.private_ip,
            vpc_security_group_ids=list(args.security_group_ids),
            # No user_data: the machine config carries the cluster PKI, and v7 keeps user_data in clear text in
            # state. The node boots into maintenance mode and ConfigurationApply sends it there: encrypted, but
            # the maintenance server is not authenticated (see README, "Deploy"), so run the first `up` from a
            # trusted network.
            metadata_options={
                "http_endpoint": "enabled",
                "http_tokens": "required",  # IMDSv2 only, as hardening: Talos supports both; its AWS platform
                # reads IMDS with aws-sdk-go-v2's imds client, which asks for a session token (aws.go:19,69)
                "http_put_response_hop_limit": 1,  # pods cannot reach instance credentials
            },
            root_block_device={
                "volume_size": args.root_volume_size,
                "volume_type": "gp3",
                "encrypted": True,
                "delete_on_termination": True,
            },
            tags={**tags, "Name": args.label("controlplane")},
            # One private IP cannot be held by two instances: the old one goes first.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=ignored, delete_before_replace=True),
        )

        eip = aws.ec2.Eip(f"{name}-eip", domain="vpc", tags={**tags, "Name": args.label("endpoint")},
                      opts=child)
        assoc = aws.ec2.EipAssociation(
            f"{name}-eip-assoc",
            instance_id=instance.id,
            allocation_id=eip.allocation_id,
            # Release the old association first; the address then moves to the replacement instance.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )

        self.volume_ids = {}
        self.data_volume_tags = {DATA_VOLUME_TAG: data_volume_tag_value(pulumi.get_stack(), args.cluster_name)}
        # What must exist before Talos is configured: the address and every data disk.
        self.attachments: list[pulumi.Resource] = [assoc]
        for vol in args.data_volumes:
            volume = aws.ebs.Volume(
                f"{name}-data-{vol.name}",
                availability_zone=args.availability_zone,
                size=vol.size,
                type=vol.type,
                encrypted=True,
                # A lost volume comes back from its newest DLM snapshot (docs/RUNBOOK.md, "A data volume is lost").
                # A new snapshotId replaces the volume, which `protect` refuses while the old one is in state.
                snapshot_id=vol.snapshot_id,
                final_snapshot=True,  # even a deliberate delete keeps a snapshot of the data
                tags={**tags, **self.data_volume_tags, "Name": args.label(vol.name),
                      MOUNT_TAG: vol.mount_path},
                # Data outlives the instance and `pulumi destroy` stops here instead of deleting it.
                opts=pulumi.ResourceOptions(parent=self, protect=True),
            )
            attachment = aws.ec2.VolumeAttachment(
                f"{name}-data-{vol.name}-attach",
                device_name=vol.device,
                instance_id=instance.id,
                volume_id=volume.id,
                stop_instance_before_detaching=True,  # detach cleanly, never from a running kernel
                # An EBS volume attaches to one instance at a time: detach from the old one before attaching anew.
                opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
            )
            self.volume_ids[vol.name] = volume.id
            self.attachments.append(attachment)

        self.instance_id = instance.id
        # The allocation's address, stable across instance replacement (so previews of a rebuild do not show the
        # endpoint, certificates and client configs as unknown). Talos waits for `attachments`, which holds the
        # association, before it talks to this address.
        self.public_ip = eip.public_ip
        self.private_ip = instance.private_ip
        self.ami_id = ami.id
        self.architecture = arch
        self.register_outputs(
            {
                "instance_id": self.instance_id,
                "public_ip": self.public_ip,
                "private_ip": self.private_ip,
                "ami_id": self.ami_id,
                "architecture": self.architecture,
                "volume_ids": self.volume_ids,
            }
        )
