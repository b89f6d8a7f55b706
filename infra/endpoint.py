"""The Kubernetes API endpoint of a three-node control plane: a network load balancer on 6443 across the nodes' zones.

What Sidero's own AWS guide does (Talos v1.13 docs, siderolabs/docs
``public/talos/v1.13/platform-specific-installations/cloud-platforms/aws.mdx``, "Create a Load Balancer": an
internet-facing ``--type network`` load balancer over the three subnets, a TCP 6443 listener forwarding to a TCP 6443
target group, the machine configs generated with ``https://<load balancer DNS name>:6443`` as the cluster endpoint),
with three changes, each for a reason:

* **IP targets at the nodes' fixed private IPs, client IP preservation off**, where the guide registers instance
  targets. Instance targets preserve the client's address (Elastic Load Balancing, Network Load Balancers, "Edit
  target group attributes", client IP preservation: enabled by default for instance targets, disabled for IP targets
  over TCP), and then a target that connects through its own load balancer and is sent to itself sees a packet from
  itself to itself and the connection times out ("Troubleshoot your Network Load Balancer", loopback timeout; the fix
  AWS gives is an IP target type). On Talos every node does dial the cluster endpoint (the kubelet through KubePrism,
  and the endpoint discovery that lets a wiped etcd member rejoin: ``internal/app/machined/pkg/controllers/k8s/
  endpoint.go``). The private IPs are pinned (infra/node.py), so a replaced instance is the same target and no
  attachment changes.
* **A security group on the load balancer**, admitting 6443 from ``adminCidrs`` and from the nodes' Elastic IPs (a
  node reaching the internet-facing endpoint arrives from its Elastic IP), the nodes admitting 6443 from this group
  ("Update the security groups for your Network Load Balancer": a target rule referencing the load balancer's group
  lets clients in through the load balancer only; health checks obey the group's outbound rules, so it may leave for
  the nodes on 6443). A group can only be given when the load balancer is created. The guide opens 6443 to the world.
* **Cross-zone load balancing on**: one target per zone, so without it a client sent to the zone of a dead node would
  wait for DNS to drop that zone's address; with it every load balancer node forwards to every healthy target.

The Talos API (50000) is not behind it: talosctl balances across every endpoint its talosconfig lists and skips one
that does not answer (``pkg/machinery/client/resolver/roundrobin.go``, gRPC ``round_robin``), and the talosconfig lists
every node's Elastic IP (infra/talos.py), as the guide's ``talosctl config endpoints`` does.

A one-node stack has no load balancer: it would cost about $16 a month (docs/COSTS.md) and survive nothing that the
one node's Elastic IP does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra.network import KUBERNETES_API_PORT

# How long a deregistered target keeps its open connections (default 300 s): a replaced node's long-lived watches go
# sooner. Health: TCP on the traffic port every 10 s, 3 checks either way (the target group's TCP defaults).
DEREGISTRATION_DELAY_SECONDS = 30
HEALTH_CHECK_INTERVAL_SECONDS = 10
HEALTH_CHECK_THRESHOLD = 3


@dataclass
class ApiEndpointArgs:
    vpc_id: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]  # every node's public subnet: the load balancer has a node in each zone
    # The targets: each node's private IP as the instance has it (node 0's may predate the pin: infra/node.py).
    node_private_ips: Sequence[pulumi.Input[str]]
    node_public_ips: Sequence[pulumi.Input[str]]  # the nodes' Elastic IPs: they reach the endpoint from these
    node_security_group_id: pulumi.Input[str]
    admin_cidrs: Sequence[str]
    tags: Mapping[str, str] = field(default_factory=dict)


# Elastic Load Balancing names a load balancer or a target group in at most 32 characters, alphanumerics and hyphens,
# not beginning or ending with a hyphen, not beginning with "internal-" (ELBv2 API reference, CreateLoadBalancer and
# CreateTargetGroup, "Name"). Pulumi names each from its logical name plus "-" and 7 random characters (pulumi-aws
# auto-naming), so the logical name may hold 24; a cluster name may hold 40 (infra/config.py).
ELB_NAME_MAX = 32
AUTONAME_SUFFIX = 8  # "-" + 7 random characters


def elb_logical_name(cluster: str, what: str) -> str:
    """``<cluster>-<what>`` (``talos-dr-api-lb``), the cluster part cut so Pulumi's auto-name fits ELB's 32."""
    room = ELB_NAME_MAX - AUTONAME_SUFFIX - len(what) - 1
    base = cluster[:room].rstrip("-")  # never empty: a cluster name starts with a letter or digit
    if f"{base}-{what}".startswith("internal-"):
        base = "cp-" + base[: room - 3].rstrip("-")
    return f"{base}-{what}"


def _v6(cidr: str) -> bool:
    return ":" in cidr


class ApiEndpoint(pulumi.ComponentResource):
    dns_name: pulumi.Output[str]
    url: pulumi.Output[str]  # https://<dns name>:6443, the cluster endpoint
    load_balancer_arn: pulumi.Output[str]
    target_group_arn: pulumi.Output[str]

    def __init__(self, name: str, args: ApiEndpointArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("talos-dr:endpoint:ApiEndpoint", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.tags)
        port = KUBERNETES_API_PORT

        sg = aws.ec2.SecurityGroup(
            f"{name}-api-lb-sg",
            vpc_id=args.vpc_id,
            description="Kubernetes API load balancer: 6443 from admin CIDRs and the nodes' Elastic IPs",
            tags={**tags, "Name": f"{name}-api-lb-sg"},
            opts=child,
        )
        sources: list[tuple[str, pulumi.Input[str], bool]] = [
            (f"admin-{i}", cidr, _v6(cidr)) for i, cidr in enumerate(args.admin_cidrs)]
        sources += [(f"node-{i}", pulumi.Output.from_input(ip).apply(lambda a: f"{a}/32"), False)
                    for i, ip in enumerate(args.node_public_ips)]
        for key, cidr, v6 in sources:
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-api-lb-from-{key}",
                security_group_id=sg.id,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                cidr_ipv4=None if v6 else cidr,
                cidr_ipv6=cidr if v6 else None,
                description=f"kube API via the load balancer ({key})",
                opts=child,
            )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-api-lb-to-nodes",
            security_group_id=sg.id,
            referenced_security_group_id=args.node_security_group_id,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            description="kube API and health checks to the control-plane nodes",
            opts=child,
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-kube-api-from-lb",
            security_group_id=args.node_security_group_id,
            referenced_security_group_id=sg.id,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            description="kube API and health checks from the API load balancer",
            opts=child,
        )

        lb = aws.lb.LoadBalancer(
            elb_logical_name(name, "api-lb"),
            load_balancer_type="network",
            internal=False,
            ip_address_type="ipv4",
            subnets=list(args.subnet_ids),
            security_groups=[sg.id],
            enable_cross_zone_load_balancing=True,
            tags=tags,
            opts=child,
        )
        target_group = aws.lb.TargetGroup(
            elb_logical_name(name, "api-tg"),
            port=port,
            protocol="TCP",
            target_type="ip",
            vpc_id=args.vpc_id,
            preserve_client_ip="false",
            deregistration_delay=DEREGISTRATION_DELAY_SECONDS,
            health_check={
                "protocol": "TCP",
                "port": "traffic-port",
                "interval": HEALTH_CHECK_INTERVAL_SECONDS,
                "healthy_threshold": HEALTH_CHECK_THRESHOLD,
                "unhealthy_threshold": HEALTH_CHECK_THRESHOLD,
            },
            tags=tags,
            opts=child,
        )
        for i, ip in enumerate(args.node_private_ips):
            aws.lb.TargetGroupAttachment(
                f"{name}-api-target-{i}", target_group_arn=target_group.arn, target_id=ip, port=port, opts=child
            )
        aws.lb.Listener(
            f"{name}-api-listener",
            load_balancer_arn=lb.arn,
            port=port,
            protocol="TCP",
            default_actions=[{"type": "forward", "target_group_arn": target_group.arn}],
            tags=tags,
            opts=child,
        )

        self.dns_name = lb.dns_name
        self.url = lb.dns_name.apply(lambda host: f"https://{host}:{port}")
        self.load_balancer_arn = lb.arn
        self.target_group_arn = target_group.arn
        self.register_outputs({"dns_name": self.dns_name, "url": self.url,
                               "load_balancer_arn": self.load_balancer_arn,
                               "target_group_arn": self.target_group_arn})
