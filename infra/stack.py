"""The whole stack, wired: ``build(cfg)`` creates every component and returns the stack outputs.

``__main__.py`` calls it and exports the result; tests call it under mocks. Returning a ``Stack`` (components plus
outputs) lets tests reach every component. The snapshot schedule (``scheduledSnapshots``) is built last: it needs
the network, node, bucket and Talos PKI, and adds its own outputs (``dr.core.outputs.SCHEDULE_OUTPUTS``) to the stack's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from dr.core import outputs as out
from dr.core.cluster_nodes import ClusterNode
from dr.core.recovery_kit import KIT_OUTPUTS
from infra.addons import Addons, AddonsArgs
from infra.alarms import BackupAlarms, BackupAlarmsArgs
from infra.bucket import BackupBucket, BackupBucketArgs
from infra.config import StackConfig
from infra.endpoint import ApiEndpoint, ApiEndpointArgs
from infra.network import Network, NetworkArgs, require_zones
from infra.node import Node, NodeArgs
from infra.providers.control_plane_size import ControlPlaneSize
from infra.providers.secret_file import LocalSecretFile
from infra.recovery_kit import NodeVolumes, RecoveryKit, RecoveryKitArgs
from infra.schedule import SnapshotSchedule, SnapshotScheduleArgs, lambda_subnet_cidrs
from infra.talos import TalosCluster, TalosClusterArgs, TalosNode
from infra.volume_snapshots import DataVolumeSnapshots, DataVolumeSnapshotsArgs

TALOSCONFIG_FILE = "talosconfig"
KUBECONFIG_FILE = "kubeconfig"
# The engine honours `replacement_trigger` (infra/talos.py) from 3.208.0 (pulumi/pulumi CHANGELOG.md, 3.208.0:
# "[engine] Add a `replacement_trigger` resource option"). The SDK sends it without checking the engine supports
# it (pulumi/runtime/resource.py), so an older CLI would silently never re-apply or re-bootstrap a replaced node.
# The check itself is the engine's RequirePulumiVersion RPC (CLI 3.217.0 and later): an older CLI fails it with
# "does not support the `RequirePulumiVersion` RPC", so in practice the floor is 3.217.0.
PULUMI_CLI_RANGE = ">=3.208.0"


@dataclass
class Stack:
    network: Network
    node: Node
    bucket: BackupBucket
    talos: TalosCluster
    addons: Addons
    schedule: SnapshotSchedule | None = None  # None when scheduledSnapshots is off
    alarms: BackupAlarms | None = None  # the schedule's alarms; None when scheduledSnapshots is off
    recovery_kit: RecoveryKit | None = None  # None without ageRecipients
    volume_snapshots: DataVolumeSnapshots | None = None  # None without dataVolumes
    outputs: dict[str, pulumi.Output] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)  # every control-plane node, node 0 (``node``) first
    endpoint: ApiEndpoint | None = None  # the load balancer of a three-node control plane; None with one node


def require_pulumi_cli(version_range: str = PULUMI_CLI_RANGE) -> None:
    """Fail the program (one message, no traceback) unless the running Pulumi CLI satisfies ``version_range``."""
    try:
        pulumi.require_pulumi_version(version_range)
    except Exception as exc:
        raise pulumi.RunError(
            f"talos-dr needs a Pulumi CLI {version_range} that can answer the version check (3.217.0 or newer): "
            f"{exc} — install one from https://www.pulumi.com/docs/install/ (`pulumi version` shows yours)"
        ) from exc


def build(cfg: StackConfig, talos_dir: Path) -> Stack:
    """Create the stack's resources from a validated config; ``talos_dir`` receives talosconfig and kubeconfig."""
    name = cfg.cluster_name
    tags = {"talos-dr/cluster": name, "talos-dr/stack": pulumi.get_stack()}

    # First: a preview that would shrink the control plane (3 -> 1) fails here, before any node is touched.
    ControlPlaneSize(f"{name}-control-plane", cfg.control_plane_nodes)
    zones, cidrs = cfg.zones, cfg.subnet_cidrs
    if len(zones) > 1:
        # The further zones are derived from availabilityZone's letter (infra/config.py node_zones): check that the
        # account has them before anything is created (a plain invoke, so a missing zone is one error, not a failure
        # of every resource that would have used it). A one-node stack makes no such call.
        require_zones(zones, aws.get_availability_zones(state="available").names)
    network = Network(
        name,
        NetworkArgs(
            vpc_cidr=cfg.vpc_cidr,
            subnet_cidr=cfg.subnet_cidr,
            availability_zone=cfg.availability_zone,
            admin_cidrs=cfg.admin_cidrs,
            tags=tags,
            more_subnets=list(zip(cidrs[1:], zones[1:], strict=True)),
        ),
    )
    nodes = [_node(name if i == 0 else f"{name}-cp{i}", i, cfg, network, tags)
             for i in range(cfg.control_plane_nodes)]
    node = nodes[0]
    endpoint = None
    if len(nodes) > 1:
        endpoint = ApiEndpoint(
            name,
            ApiEndpointArgs(
                vpc_id=network.vpc_id,
                subnet_ids=network.subnet_ids,
                node_private_ips=[n.private_ip for n in nodes],
                node_public_ips=[n.public_ip for n in nodes],
                node_security_group_id=network.security_group_id,
                admin_cidrs=cfg.admin_cidrs,
                tags=tags,
            ),
        )
    deployer = aws.iam.get_session_context_output(arn=aws.get_caller_identity_output().arn).issuer_arn
    lambda_role: pulumi.Output[list[str]] = pulumi.Output.from_input([])
    resolve_lambda_role: Callable[[pulumi.Output[list[str]]], None] | None = None
    if cfg.scheduled_snapshots:  # the Lambda's role exists only once the schedule below is built
        lambda_role, resolve_lambda_role = pulumi.deferred_output()
    bucket = _bucket(name, cfg, deployer, lambda_role, tags)
    cluster = TalosCluster(
        name,
        TalosClusterArgs(
            cluster_name=name,
            talos_version=cfg.talos_version,
            kubernetes_version=cfg.kubernetes_version,
            public_ip=node.public_ip,
            private_ip=node.private_ip,
            node_identity=node.instance_id,
            data_volumes=cfg.data_volumes,
            volume_ids=node.volume_ids,
            node_ready=node.attachments,
            more_nodes=[TalosNode(n.public_ip, n.private_ip, n.instance_id, n.volume_ids, n.attachments)
                        for n in nodes[1:]],
            endpoint_host=endpoint.dns_name if endpoint else None,
        ),
    )
    # Rewritten by `pulumi up` whenever a file is missing or differs, so a lost .talos/ comes back on its own.
    LocalSecretFile(f"{name}-talosconfig-file", str(talos_dir / TALOSCONFIG_FILE), cluster.talosconfig)
    LocalSecretFile(f"{name}-kubeconfig-file", str(talos_dir / KUBECONFIG_FILE), cluster.kubeconfig)
    addons = Addons(
        name,
        AddonsArgs(
            kubeconfig=cluster.provider_kubeconfig,
            argocd_chart_version=cfg.argocd_chart_version,
            secrets=cfg.kubernetes_secrets,
            depends_on=[cluster.ready],
        ),
    )

    outputs = _outputs(name, cfg, nodes, network, bucket, cluster)
    # What the lifecycle rules keep, for `talos-dr prune --s3` (after the kit's outputs: the kit does not carry it).
    outputs[out.SNAPSHOT_RETENTION_DAYS] = pulumi.Output.from_input(dict(cfg.snapshot_tier_days))
    recovery_kit = _recovery_kit(name, cfg, nodes, network, bucket, cluster, outputs, deployer, tags)
    volume_snapshots = None
    if cfg.data_volumes:
        volume_snapshots = DataVolumeSnapshots(
            name,
            DataVolumeSnapshotsArgs(
                target_tags=node.data_volume_tags,
                schedule=cfg.data_volume_snapshot_schedule,
                retain=cfg.data_volume_snapshot_retain,
                region=cfg.aws_region,
                account_id=aws.get_caller_identity_output().account_id,
                tags=tags,
            ),
        )

    schedule = None
    alarms = None
    if cfg.scheduled_snapshots:
        assert resolve_lambda_role is not None
        try:
            schedule = _schedule(name, cfg, network, nodes, bucket, cluster, tags)
        except BaseException:
            resolve_lambda_role(pulumi.Output.from_input([]))  # an unresolved output would hang the program
            raise
        resolve_lambda_role(schedule.role_arn.apply(lambda arn: [arn]))
        alarms = _alarms(name, cfg, schedule, tags)
        outputs |= {
            out.SNAPSHOT_FUNCTION_NAME: schedule.function_name,
            out.NEWEST_SNAPSHOT_KEY: schedule.newest_snapshot_key,
            out.NEWEST_SNAPSHOT_TIME: schedule.newest_snapshot_time,
            out.BACKUPS_STATUS: schedule.backups,
            out.ALERT_TOPIC_ARN: alarms.topic_arn,
        }
    return Stack(network=network, node=node, bucket=bucket, talos=cluster, addons=addons, schedule=schedule,
                 alarms=alarms, recovery_kit=recovery_kit, volume_snapshots=volume_snapshots, outputs=outputs,
                 nodes=nodes, endpoint=endpoint)


def _node(name: str, index: int, cfg: StackConfig, network: Network, tags: dict[str, str]) -> Node:
    """Control-plane node ``index`` in its own zone and subnet. Node 0 is the one-node stack's node, unchanged: same
    names, same inputs (its address pinned only when the instance is created unless nodePrivateIp is set); the others
    are pinned at their subnet's 10th address from the start (config.StackConfig.node_private_ips)."""
    return Node(
        name,
        NodeArgs(
            cluster_name=cfg.cluster_name,
            region=cfg.aws_region,
            talos_version=cfg.talos_version,
            instance_type=cfg.instance_type,
            subnet_id=network.subnet_ids[index],
            security_group_ids=[network.security_group_id],
            availability_zone=network.availability_zones[index],
            root_volume_size=cfg.root_volume_size,
            data_volumes=cfg.node_data_volumes(index),
            tags=tags,
            private_ip=cfg.node_private_ips[index],
            private_ip_set=cfg.node_private_ip_set if index == 0 else True,
            index=index,
        ),
    )


def _bucket(name: str, cfg: StackConfig, deployer: pulumi.Output[str], lambda_role: pulumi.Output[list[str]],
            tags: dict[str, str]) -> BackupBucket:
    """The backup bucket, with who may do what in it (docs/VAULT.md). Read: whoever runs `pulumi up` (``deployer``,
    its role, not the session: aws:PrincipalArn), the configured readers, and the snapshot Lambda's role
    (``lambda_role``, a deferred output, so the policy can name a role created after the bucket without a cycle).
    Write: snapshots, the Lambda's role and `snapshotWriters`; the kit, the credential and the bucket's own rules,
    the deployers (whoever runs `pulumi up` plus config `deployers`), so a snapshot writer cannot replace what a
    restore trusts; delete: nobody but lifecycle and the break-glass `snapshotDeleter`."""
    deployers = deployer.apply(lambda arn: [arn, *cfg.deployers])
    # Writers read too: the copy to `latest` reads its source, and a HEAD is a GetObject; so does the break-glass
    # deleter (`talos-dr prune --s3` reads each snapshot's tier and source before it deletes).
    deleter = [cfg.snapshot_deleter] if cfg.snapshot_deleter else []
    readers = pulumi.Output.all(deployers, lambda_role).apply(
        lambda a: [*a[0], *cfg.snapshot_readers, *cfg.snapshot_writers, *deleter, *a[1]])
    return BackupBucket(
        f"{name}-etcd-backups",
        BackupBucketArgs(
            tier_days=cfg.snapshot_tier_days,
            bucket_name=cfg.bucket_name,
            snapshot_prefix=out.DEFAULT_SNAPSHOT_PREFIX,
            object_lock_days=cfg.snapshot_object_lock_days,
            readers=readers,
            credential_readers=pulumi.Output.all(deployers, lambda_role).apply(lambda a: [*a[0], *a[1]]),
            deployers=deployers,
            snapshot_writers=lambda_role.apply(lambda role: [*role, *cfg.snapshot_writers]),
            verifiers=deployers.apply(lambda d: [*d, *cfg.snapshot_readers]),
            deleters=(cfg.snapshot_deleter,) if cfg.snapshot_deleter else (),
            tags=tags,
        ),
    )


def _outputs(name: str, cfg: StackConfig, nodes: list[Node], network: Network, bucket: BackupBucket,
             cluster: TalosCluster) -> dict[str, pulumi.Output]:
    """The stack outputs every stack has (dr.core.outputs names them; the DR commands read them). The single-node
    outputs (nodeInstanceId, ...) are node 0's, the bootstrap node; ``controlPlaneNodes`` lists every node."""
    node = nodes[0]
    return {
        out.BUCKET: bucket.bucket_name,
        out.SNAPSHOT_PREFIX: pulumi.Output.from_input(out.DEFAULT_SNAPSHOT_PREFIX),
        out.AWS_REGION: pulumi.Output.from_input(cfg.aws_region),
        out.CLUSTER_NAME: pulumi.Output.from_input(name),
        out.CLUSTER_ENDPOINT: cluster.cluster_endpoint,
        out.NODE_INSTANCE_ID: node.instance_id,
        out.NODE_PUBLIC_IP: node.public_ip,
        out.NODE_PRIVATE_IP: node.private_ip,
        out.TALOS_VERSION: pulumi.Output.from_input(cfg.talos_version),
        out.SNAPSHOT_AGE_RECIPIENTS: pulumi.Output.from_input(list(cfg.age_recipients)),
        out.CONTROL_PLANE_NODES: _control_plane_nodes(name, nodes, network),
        out.TALOSCONFIG: pulumi.Output.secret(cluster.talosconfig),
        out.KUBECONFIG: pulumi.Output.secret(cluster.kubeconfig),
        out.CONTROLPLANE_CONFIG: pulumi.Output.secret(cluster.controlplane_config),
        out.TALOS_MACHINE_SECRETS: pulumi.Output.secret(cluster.machine_secrets_json),
    }


def _control_plane_nodes(name: str, nodes: list[Node], network: Network) -> pulumi.Output[list[dict[str, str]]]:
    """Stack output ``controlPlaneNodes``: every node, node 0 first. With one node, exactly what it always was (named
    after the cluster, no zone); with three, each named ``<cluster>-cp<i>`` (node 0 keeps the cluster's name) with
    its zone."""
    if len(nodes) == 1:
        node = nodes[0]
        return pulumi.Output.all(node.instance_id, node.public_ip, node.private_ip).apply(
            lambda v: [ClusterNode(name=name, private_ip=v[2], public_ip=v[1], instance_id=v[0]).to_output()])

    def entry(i: int, v: list[Any]) -> dict[str, str]:
        return ClusterNode(name=name if i == 0 else f"{name}-cp{i}", private_ip=v[2], public_ip=v[1],
                           instance_id=v[0], availability_zone=v[3]).to_output()

    each = [pulumi.Output.all(n.instance_id, n.public_ip, n.private_ip, zone).apply(functools.partial(entry, i))
            for i, (n, zone) in enumerate(zip(nodes, network.availability_zones, strict=True))]
    return pulumi.Output.all(*each).apply(list)


def _recovery_kit(name: str, cfg: StackConfig, nodes: list[Node], network: Network, bucket: BackupBucket,
                  cluster: TalosCluster,
                  outputs: dict[str, pulumi.Output], deployer: pulumi.Output[str],
                  tags: dict[str, str]) -> RecoveryKit | None:
    """The recovery kit (the Talos secrets and the stack's settings, age-encrypted in the bucket), or a warning
    saying how to get one when no ageRecipients are configured."""
    if not cfg.age_recipients:
        pulumi.log.warn("no recovery kit: ageRecipients is empty, so losing the Pulumi state would lose the Talos "
                        "secrets and the stack's settings; add a public key with "
                        "`pulumi config set --path 'ageRecipients[0]' age1...` (see docs/RUNBOOK.md)")
        return None
    return RecoveryKit(
        name,
        RecoveryKitArgs(
            bucket_name=bucket.bucket_name,
            cluster_name=name,
            region=cfg.aws_region,
            recipients=cfg.age_recipients,
            machine_secrets=cluster.secrets.machine_secrets,
            outputs={k: v for k, v in outputs.items() if k in KIT_OUTPUTS},
            # One node: its volumes by name, as a one-node kit always recorded them. More: every node's, each with
            # its node's index, name (as in controlPlaneNodes) and zone, so `talos-dr rebuild` handles each.
            volume_ids=nodes[0].volume_ids if len(nodes) == 1 else {},
            node_volumes=[] if len(nodes) == 1 else [
                NodeVolumes(i, name if i == 0 else f"{name}-cp{i}", zone, n.volume_ids)
                for i, (n, zone) in enumerate(zip(nodes, network.availability_zones, strict=True))],
            tags=tags,
            writer=deployer,
            bucket_ready=[bucket.policy],
        ),
    )


def _alarms(name: str, cfg: StackConfig, schedule: SnapshotSchedule, tags: dict[str, str]) -> BackupAlarms:
    from dr.core.freshness import schedule_interval

    if not cfg.alert_emails:
        pulumi.log.warn("no alertEmails: the backup alarms notify the alertTopicArn topic, which nobody reads yet; "
                        "add an address with `pulumi config set --path 'alertEmails[0]' ops@example.com` "
                        "(see docs/MONITORING.md)")
    return BackupAlarms(
        name,
        BackupAlarmsArgs(
            cluster_name=name,
            interval_seconds=int(schedule_interval(cfg.snapshot_schedule).total_seconds()),
            failed_runs_queue_name=schedule.failed_runs_queue_name,
            alert_emails=cfg.alert_emails,
            log_group=f"/talos-dr/{name}/snapshots",
            tags=tags,
        ),
    )


def _schedule(name: str, cfg: StackConfig, network: Network, nodes: list[Node], bucket: BackupBucket,
              cluster: TalosCluster, tags: dict[str, str]) -> SnapshotSchedule:
    node = nodes[0]
    # One Lambda subnet per node's zone, so the schedule still runs with any one zone down; node 0's is the one a
    # one-node stack always had.
    lambda_cidrs = lambda_subnet_cidrs(cfg.vpc_cidr, cfg.subnet_cidrs, len(nodes))
    return SnapshotSchedule(
        name,
        SnapshotScheduleArgs(
            vpc_id=network.vpc_id,
            availability_zone=network.availability_zone,
            lambda_subnet_cidr=lambda_cidrs[0],
            more_lambda_subnets=list(zip(lambda_cidrs[1:], network.availability_zones[1:], strict=True)),
            more_node_private_ips=[n.private_ip for n in nodes[1:]],
            node_security_group_id=network.security_group_id,
            bucket_name=bucket.bucket_name,
            bucket_arn=bucket.bucket_arn,
            node_private_ip=node.private_ip,
            machine_secrets=cluster.secrets.machine_secrets,
            cluster_name=name,
            region=cfg.aws_region,
            schedule_expression=cfg.snapshot_schedule,
            snapshot_prefix=out.DEFAULT_SNAPSHOT_PREFIX,
            age_recipients=cfg.age_recipients,
            wheel_dir=cfg.snapshot_lambda_wheel_dir,
            account_id=aws.get_caller_identity_output().account_id,
            # The proving snapshot at deploy time needs etcd running: wait for the API server (whose
            # readiness includes etcd), not just the bootstrap call.
            ready=[cluster.ready],
            bucket_ready=[bucket.policy],
            object_lock=cfg.snapshot_object_lock_days > 0,
            tags=tags,
        ),
    )
