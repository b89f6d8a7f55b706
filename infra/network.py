"""Network: one VPC with a public subnet per control-plane node; only the admin CIDRs reach the Talos and Kubernetes
APIs from outside.

Node 0's subnet is ``subnetCidr`` and keeps its resource names, so growing from one node to three only adds: a subnet
per further node (each in its own availability zone, on the same public route table) and one rule letting the nodes
reach each other (etcd peers 2380 and clients 2379, kubelet, apid forwarding, the CNI), as Sidero's AWS guide does
("allow all internal traffic within the same security group": Talos v1.13 docs, siderolabs/docs
public/talos/v1.13/platform-specific-installations/cloud-platforms/aws.mdx, "Create a Security Group").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

TALOS_API_PORT = 50000  # apid (talosctl)
KUBERNETES_API_PORT = 6443


@dataclass
class NetworkArgs:
    vpc_cidr: str
    subnet_cidr: str
    availability_zone: str
    admin_cidrs: Sequence[str]
    tags: Mapping[str, str] = field(default_factory=dict)
    # The further nodes' subnets, (CIDR, availability zone) for node 1, 2, ...: empty for one node.
    more_subnets: Sequence[tuple[str, pulumi.Input[str]]] = ()


def require_zones(wanted: Sequence[str], available: Sequence[str]) -> list[str]:
    """``wanted`` (every node's zone), once each is one of the account's ``available`` zones; else a ValueError that
    says which and what to set. (Zone names map to different physical zones per account, and not every account has
    every letter: ``aws ec2 describe-availability-zones``.)"""
    missing = [z for z in wanted if z not in set(available)]
    if missing:
        raise ValueError(
            f"the control-plane nodes go to {', '.join(wanted)} (availabilityZone and the zones lettered after it), "
            f"but {', '.join(missing)} is not an available zone of this account in this region (available: "
            f"{', '.join(sorted(available)) or 'none'}); set availabilityZone to a zone followed by two more, e.g. "
            f"`pulumi config set availabilityZone {sorted(available)[0] if available else wanted[0]}`")
    return list(wanted)


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    subnet_id: pulumi.Output[str]
    security_group_id: pulumi.Output[str]
    route_table_id: pulumi.Output[str]
    availability_zone: pulumi.Output[str]
    subnet_ids: list[pulumi.Output[str]]  # every node's subnet, node 0's first
    availability_zones: list[pulumi.Output[str]]  # every node's zone, node 0's first

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("talos-dr:network:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.tags)

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.vpc_cidr,
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags={**tags, "Name": f"{name}-vpc"},
            opts=child,
        )
        subnet = aws.ec2.Subnet(
            f"{name}-public",
            vpc_id=vpc.id,
            cidr_block=args.subnet_cidr,
            availability_zone=args.availability_zone,
            map_public_ip_on_launch=False,  # the node gets an Elastic IP, which survives instance replacement
            tags={**tags, "Name": f"{name}-public"},
            opts=child,
        )
        igw = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=vpc.id, tags={**tags, "Name": f"{name}-igw"}, opts=child
        )
        route_table = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=vpc.id,
            tags={**tags, "Name": f"{name}-public-rt"},
            opts=child,
        )
        # A separate Route rather than inline `routes=`: an inline list would own the whole table and fight the
        # routes that a gateway endpoint (added by the snapshot schedule) puts there.
        aws.ec2.Route(
            f"{name}-default-route",
            route_table_id=route_table.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=igw.id,
            opts=child,
        )
        aws.ec2.RouteTableAssociation(
            f"{name}-public-rta", subnet_id=subnet.id, route_table_id=route_table.id, opts=child
        )
        subnets = [subnet]
        for i, (cidr, zone) in enumerate(args.more_subnets, start=1):
            more = aws.ec2.Subnet(
                f"{name}-public-{i}",
                vpc_id=vpc.id,
                cidr_block=cidr,
                availability_zone=zone,
                map_public_ip_on_launch=False,
                tags={**tags, "Name": f"{name}-public-{i}"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-rta-{i}", subnet_id=more.id, route_table_id=route_table.id, opts=child
            )
            subnets.append(more)

        # Rules are separate resources, never inline `ingress=`/`egress=` blocks: the provider cannot mix the two,
        # and other parts of the stack (the snapshot schedule) add their own rules to this group.
        sg = aws.ec2.SecurityGroup(
            f"{name}-node-sg",
            vpc_id=vpc.id,
            description="Talos node: apid and Kubernetes API from admin CIDRs only",
            tags={**tags, "Name": f"{name}-node-sg"},
            opts=child,
        )
        for port, what in ((TALOS_API_PORT, "talos"), (KUBERNETES_API_PORT, "kube")):
            for i, cidr in enumerate(args.admin_cidrs):
                v6 = ":" in cidr
                aws.vpc.SecurityGroupIngressRule(
                    f"{name}-{what}-api-{i}",
                    security_group_id=sg.id,
                    ip_protocol="tcp",
                    from_port=port,
                    to_port=port,
                    description=f"{what} API from admin CIDR {cidr}",
                    cidr_ipv4=None if v6 else cidr,
                    cidr_ipv6=cidr if v6 else None,
                    opts=child,
                )
        if args.more_subnets:
            # Control-plane nodes talk to each other on many ports (etcd 2379/2380, kubelet 10250, apid 50000,
            # trustd 50001, the CNI's overlay): every protocol from the nodes' own group, as Sidero's AWS guide does.
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-node-to-node",
                security_group_id=sg.id,
                referenced_security_group_id=sg.id,
                ip_protocol="-1",
                description="every protocol between the control-plane nodes",
                opts=child,
            )
        # The node needs the internet: Talos pulls images, reaches the time server and S3.
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-egress-all-v4", security_group_id=sg.id, ip_protocol="-1", cidr_ipv4="0.0.0.0/0", opts=child
        )

        self.vpc_id = vpc.id
        self.subnet_id = subnet.id
        self.security_group_id = sg.id
        self.route_table_id = route_table.id
        self.availability_zone = subnet.availability_zone
        self.subnet_ids = [s.id for s in subnets]
        self.availability_zones = [s.availability_zone for s in subnets]
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "subnet_id": self.subnet_id,
                "security_group_id": self.security_group_id,
                "route_table_id": self.route_table_id,
                "availability_zone": self.availability_zone,
            }
        )
