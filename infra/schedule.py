"""Scheduled etcd snapshots: a Lambda in the node's VPC streams a snapshot to S3 every hour, with the least
privilege Talos allows (an ``os:etcd:backup`` client certificate), and ``pulumi preview`` says when backups are stale.

Resources (children of ``SnapshotSchedule``):

* the credential: an object in the backup bucket (``infra.bucket.CREDENTIAL_KEY``, SSE-S3) holding a deterministic
  ``os:etcd:backup`` certificate minted from the OS CA in the machine secrets (``dr.core.credentials``: same bytes on
  every ``up`` within a 180-day period, so no diff); the bucket policy lets only the Lambda's role and the deployer
  read it. (It was a Secrets Manager secret behind a $7.30/month interface endpoint; the bucket already holds every
  etcd byte the credential can read, see README "What the credential can do".)
* network: the Lambda's own subnet (no route out of the VPC) and route table with an S3 *gateway* endpoint whose
  policy allows this bucket only (free, no NAT; the node's route table is left alone, so the node's own S3 traffic,
  image pulls included, is not filtered); the Lambda's own security group; an ingress rule on the node's group
  admitting 50000/tcp from it;
* the Lambda (``snapshot_lambda.handler.handler``, python3.13 x86_64: ``infra.lambda_package.LAMBDA_RUNTIME``) with a role allowed to write, tag and read back
  snapshot keys, list the prefix, read its credential object, and manage its VPC ENIs — never delete;
* an EventBridge Scheduler schedule (``snapshotSchedule``) in its own schedule group, whose role may only invoke this
  function and may be assumed only for that group (``aws:SourceArn``);
* retries: Lambda's asynchronous retries, bounded so none reaches the next scheduled run (``retry_settings``), and a
  failed-runs SQS queue as the on-failure destination (the Lambda role may send to it, nothing else), which
  ``infra/alarms.py`` watches; each run prints its metrics as CloudWatch Embedded Metric Format (``dr.core.metrics``);
* ``EtcdSnapshotSchedule`` (``infra/providers/backup_check.py``): takes and verifies one snapshot through the Lambda on create, flags
  stale backups at preview, takes a catch-up snapshot on ``up``.

Its parts live beside it: the deployment package (wheels, zip, hashes, the runtime and its end) in
``infra/lambda_package.py``, the IAM and endpoint policy documents in ``infra/schedule_policies.py``.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pulumi
import pulumi_aws as aws

from dr.adapters.talosapi import APID_PORT
from dr.core.etcd_health import DEFAULT_QUOTA_BYTES as DEFAULT_ETCD_QUOTA_BYTES
from dr.core.metrics import NAMESPACE as METRICS_NAMESPACE
from dr.core.outputs import DEFAULT_SNAPSHOT_PREFIX
from dr.core.timefmt import iso_utc
from infra import lambda_package as package
from infra.bucket import CREDENTIAL_KEY
from infra.schedule_policies import (
    assume_role_policy,
    destination_policy,
    endpoint_policy,
    invoke_policy,
    lambda_policy,
    schedule_source_arns,
)
from snapshot_lambda import handler as lh

# --- retries (pure) ---------------------------------------------------------------------------------------------

# The function's own limit; the runner stops its stream earlier (snapshot_lambda.handler ENV_TIMEOUT, 840 s).
LAMBDA_TIMEOUT = 900
# How long EventBridge Scheduler may keep retrying the delivery (its minimum maximum_event_age_in_seconds).
SCHEDULER_DELIVERY_WINDOW = 60
# Lambda's bounds for MaximumEventAgeInSeconds (PutFunctionEventInvokeConfig: 60 to 21600).
_EVENT_AGE_MIN, _EVENT_AGE_MAX = 60, 21600
# How long a failed-run record stays in the queue (SQS's maximum, 14 days): long enough to read after a holiday.
FAILED_RUN_RETENTION_SECONDS = 14 * 86400


@dataclass(frozen=True)
class RetrySettings:
    """Who retries a scheduled run, and for how long. Two AWS layers exist and cover different failures:

    * EventBridge Scheduler invokes the function asynchronously ("EventBridge Scheduler invokes your Lambda function
      asynchronously", https://docs.aws.amazon.com/lambda/latest/dg/with-eventbridge-scheduler.html). Its retry
      policy applies only when it "is unable to deliver an event successfully to a target"
      (https://docs.aws.amazon.com/scheduler/latest/UserGuide/managing-schedule-retry-policy.html): an accepted
      asynchronous Invoke is a delivered event, whatever the function then does. So it retries delivery only, within
      ``scheduler_max_age`` seconds (its minimum).
    * Lambda retries the function's own errors (timeouts included) "two more times, with a one-minute wait between
      the first two attempts, and two minutes between the second and third", and drops an event older than
      MaximumEventAgeInSeconds (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html,
      invocation-async-configuring.html). This is the layer that retries a failed snapshot.

    Bounds: an event delivered at most ``scheduler_max_age`` after the schedule fired is retried by Lambda at most
    ``lambda_max_age`` after that, and a retry runs at most the function timeout; the three add up to no more than
    the schedule's interval, so a retry never lands on (or after) the next scheduled run. When the interval is too
    short for that, Lambda does not retry: the next scheduled run is the retry."""

    lambda_attempts: int
    lambda_max_age: int
    scheduler_attempts: int
    scheduler_max_age: int


def retry_settings(interval_seconds: int, timeout_seconds: int = LAMBDA_TIMEOUT) -> RetrySettings:
    """The retry layers for a schedule firing every ``interval_seconds`` (see ``RetrySettings``)."""
    window = interval_seconds - timeout_seconds - SCHEDULER_DELIVERY_WINDOW
    if window >= _EVENT_AGE_MIN:
        return RetrySettings(2, min(window, _EVENT_AGE_MAX), 2, SCHEDULER_DELIVERY_WINDOW)
    # Retries could overlap the next run: none from Lambda; the event age still may not pass the interval.
    age = max(_EVENT_AGE_MIN, min(interval_seconds - SCHEDULER_DELIVERY_WINDOW, _EVENT_AGE_MAX))
    return RetrySettings(0, age, 2, SCHEDULER_DELIVERY_WINDOW)


def lambda_subnet_cidr(vpc_cidr: str, node_subnet_cidr: str, prefixlen: int = 28) -> str:
    """The Lambda's own subnet: the last ``/prefixlen`` of the VPC that does not overlap the node's subnet."""
    return lambda_subnet_cidrs(vpc_cidr, [node_subnet_cidr], 1, prefixlen)[0]


def lambda_subnet_cidrs(vpc_cidr: str, node_subnet_cidrs: Sequence[str], count: int, prefixlen: int = 28) -> list[str]:
    """``count`` Lambda subnets (one per node's zone): the last ``/prefixlen`` blocks of the VPC, from the end, that
    overlap no node's subnet. The first is the one a one-node stack always had, unless a further node's subnet now
    covers it (then it moves, and the snapshot function's subnets are updated in place)."""
    vpc = ipaddress.IPv4Network(vpc_cidr)  # the VPC and its subnets are IPv4 (infra/config.py checks it)
    nodes = [ipaddress.IPv4Network(c) for c in node_subnet_cidrs]
    found = [str(c) for c in reversed(list(vpc.subnets(new_prefix=prefixlen)))
             if not any(c.overlaps(n) for n in nodes)][:count]
    if len(found) < count:
        raise ValueError(f"no /{prefixlen} in {vpc_cidr} left for {count} snapshot Lambda subnet(s) outside the node "
                         f"subnets {', '.join(node_subnet_cidrs)}; use a larger vpcCidr")
    return found


def credential_json(machine_secrets: Mapping[str, Any], cluster: str, now: datetime) -> str:
    """The credential object's content: the deterministic os:etcd:backup credential for ``now``'s rotation period."""
    from dr.core.credentials import mint_backup_credential, os_ca_from_machine_secrets

    ca_cert, ca_key = os_ca_from_machine_secrets(machine_secrets)
    return mint_backup_credential(ca_cert, ca_key, now, cluster=cluster).to_json()


def credential_not_after(credential: str) -> str:
    """The certificate's end in a credential JSON, ISO 8601 UTC (what ``pulumi preview`` watches)."""
    from dr.adapters.talosapi import TalosCredentials
    from dr.core.cert_expiry import not_after

    return iso_utc(not_after(TalosCredentials.from_json(credential).cert_pem))


# --- the component -------------------------------------------------------------------------------------------------


@dataclass
class SnapshotScheduleArgs:
    vpc_id: pulumi.Input[str]
    availability_zone: pulumi.Input[str]  # the node's: the Lambda's subnet goes there (no cross-AZ transfer)
    lambda_subnet_cidr: str  # the Lambda's own subnet, inside the VPC, outside the node's (lambda_subnet_cidr())
    node_security_group_id: pulumi.Input[str]
    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    node_private_ip: pulumi.Input[str]
    machine_secrets: pulumi.Input[Any]  # talos.machine.Secrets(...).machine_secrets (a secret)
    cluster_name: str
    region: str
    schedule_expression: str = "rate(1 hour)"
    snapshot_prefix: str = DEFAULT_SNAPSHOT_PREFIX
    age_recipients: Sequence[str] = ()  # age public keys the Lambda encrypts to (config ageRecipients)
    code: pulumi.Archive | None = None  # default: lambda_package(wheel_dir)
    wheel_dir: str | None = None  # pre-downloaded wheels (offline machines); config snapshotLambdaWheelDir
    prove: bool = True  # create EtcdSnapshotSchedule (a snapshot at deploy time, staleness at preview)
    now: datetime | None = None  # picks the credential's rotation period; default: the clock
    account_id: pulumi.Input[str] | None = None  # for the scheduler role's confused-deputy condition
    # What must exist before the proving snapshot (the Talos bootstrap: etcd must be running).
    ready: Sequence[pulumi.Resource] = ()
    # What must exist before the credential object is written and read (the bucket policy that guards it).
    bucket_ready: Sequence[pulumi.Resource] = ()
    # The node's etcd quota (--quota-backend-bytes): the runner reports its DB size against it (etcd's default 2 GiB).
    etcd_quota_bytes: int = DEFAULT_ETCD_QUOTA_BYTES
    object_lock: bool = False  # snapshotObjectLockDays > 0: the credential object is deleted with the governance bypass
    tags: Mapping[str, str] = field(default_factory=dict)
    # Three control-plane nodes: a Lambda subnet in each further node's zone, (CIDR, zone), so the function runs with
    # any one zone down; and the further nodes' private IPs (the function tries each: ENV_NODES).
    more_lambda_subnets: Sequence[tuple[str, pulumi.Input[str]]] = ()
    more_node_private_ips: Sequence[pulumi.Input[str]] = ()


@dataclass(frozen=True)
class _Network:
    """What the network part made, for what the runner and the proof depend on."""

    subnet: aws.ec2.Subnet
    association: aws.ec2.RouteTableAssociation
    more_subnets: list[aws.ec2.Subnet]
    more_associations: list[aws.ec2.RouteTableAssociation]
    security_group: aws.ec2.SecurityGroup
    apid_rule: aws.vpc.SecurityGroupIngressRule
    s3_endpoint: aws.ec2.VpcEndpoint
    egress: list[aws.vpc.SecurityGroupEgressRule]


@dataclass(frozen=True)
class _Runner:
    """What the runner part made: the function, its role and log group, its failed-runs queue."""

    function: aws.lambda_.Function
    role: aws.iam.Role
    log_group: aws.cloudwatch.LogGroup
    failed_runs: aws.sqs.Queue


class SnapshotSchedule(pulumi.ComponentResource):
    function_name: pulumi.Output[str]
    function_arn: pulumi.Output[str]
    role_arn: pulumi.Output[str]  # the Lambda's role: the bucket policy names it as a reader
    credential_key: pulumi.Output[str]
    credential_not_after: pulumi.Output[str]
    schedule_arn: pulumi.Output[str]
    failed_runs_queue_name: pulumi.Output[str]
    failed_runs_queue_arn: pulumi.Output[str]
    log_group_name: pulumi.Output[str]
    newest_snapshot_key: pulumi.Output[Any]
    newest_snapshot_time: pulumi.Output[Any]
    backups: pulumi.Output[Any]

    def __init__(self, name: str, args: SnapshotScheduleArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("talos-dr:schedule:SnapshotSchedule", name, None, opts)
        from dr.core.freshness import schedule_interval

        interval = int(schedule_interval(args.schedule_expression).total_seconds())  # validates before anything is created
        retries = retry_settings(interval)
        now = args.now or datetime.now(UTC)
        runtime_warning = package.runtime_end_warning(now)
        if runtime_warning:
            pulumi.log.warn(runtime_warning, resource=self)

        credential, not_after = self._credential(name, args, now)
        network = self._network(name, args)
        runner = self._runner(name, args, network, retries)
        schedule = self._schedule(name, args, runner.function, retries)
        watch = None
        if args.prove:
            watch = self._watch(name, args, interval, runner, not_after,
                                depends_on=[runner.function, credential, network.apid_rule, network.s3_endpoint,
                                            *network.egress, schedule, *args.ready])
        self._publish(runner, schedule, not_after, watch)

    def _credential(
        self, name: str, args: SnapshotScheduleArgs, now: datetime
    ) -> tuple[aws.s3.BucketObjectv2, pulumi.Output[str]]:
        """The credential object, and when its certificate ends (not secret: EtcdSnapshotSchedule warns at preview
        before it does)."""
        value: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.from_input(args.machine_secrets).apply(
                lambda ms: credential_json(ms, args.cluster_name, now)
            )
        )
        not_after = pulumi.Output.unsecret(value).apply(credential_not_after)
        credential = aws.s3.BucketObjectv2(
            f"{name}-credential-object",
            bucket=args.bucket_name,
            key=CREDENTIAL_KEY,
            content=value,
            content_type="application/json",
            server_side_encryption="AES256",
            # With Object Lock on, S3 wants a checksum on every PUT
            # (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock-managing.html, uploading objects).
            checksum_algorithm="SHA256",
            # `pulumi destroy` removes every version of it (terraform-provider-aws internal/service/s3
            # deleteAllObjectVersions): it holds a certificate that reads all of etcd, and the bucket policy lets the
            # deployer alone delete it. Under Object Lock (governance) each version is locked; force_destroy makes the
            # provider send x-amz-bypass-governance-retention (deleteObjectVersion: `BypassGovernanceRetention =
            # force`), which S3 honours only for a caller with s3:BypassGovernanceRetention
            # (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock-managing.html, bypassing governance
            # mode). docs/VAULT.md, "Destroy".
            force_destroy=args.object_lock,
            tags=dict(args.tags),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.bucket_ready)),
        )
        return credential, not_after

    def _network(self, name: str, args: SnapshotScheduleArgs) -> _Network:
        """The Lambda's own subnet and route table: no internet gateway, no NAT, only the VPC's local route and the S3
        gateway endpoint, whose policy allows this bucket alone, so a compromised Lambda cannot copy snapshots to a
        bucket of its own. The node keeps its route table to itself, so its own S3 traffic is never filtered by this
        endpoint. The Lambda's security group reaches apid on the node and S3, nothing else."""
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.tags)
        subnet = aws.ec2.Subnet(
            f"{name}-lambda-subnet",
            vpc_id=args.vpc_id,
            cidr_block=args.lambda_subnet_cidr,
            availability_zone=args.availability_zone,
            map_public_ip_on_launch=False,
            tags={**tags, "Name": f"{name}-lambda"},
            opts=child,
        )
        route_table = aws.ec2.RouteTable(
            f"{name}-lambda-rt", vpc_id=args.vpc_id, tags={**tags, "Name": f"{name}-lambda"}, opts=child
        )
        association = aws.ec2.RouteTableAssociation(
            f"{name}-lambda-rt-assoc", subnet_id=subnet.id, route_table_id=route_table.id, opts=child
        )
        lambda_sg = aws.ec2.SecurityGroup(
            f"{name}-lambda-sg",
            vpc_id=args.vpc_id,
            description="Scheduled etcd snapshot Lambda: out to apid and S3 only",
            tags={**tags, "Name": f"{name}-lambda-sg"},
            opts=child,
        )
        apid_rule = aws.vpc.SecurityGroupIngressRule(
            f"{name}-apid-from-lambda",
            security_group_id=args.node_security_group_id,
            referenced_security_group_id=lambda_sg.id,
            ip_protocol="tcp",
            from_port=APID_PORT,
            to_port=APID_PORT,
            description="apid from the scheduled snapshot Lambda",
            opts=child,
        )
        s3_endpoint = aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=args.vpc_id,
            service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[route_table.id],
            policy=pulumi.Output.from_input(args.bucket_arn).apply(endpoint_policy),
            tags={**tags, "Name": f"{name}-s3"},
            opts=child,
        )
        egress = self._egress(name, args, lambda_sg, s3_endpoint)
        more_subnets, more_associations = [], []
        for i, (cidr, zone) in enumerate(args.more_lambda_subnets, start=1):
            more = aws.ec2.Subnet(
                f"{name}-lambda-subnet-{i}",
                vpc_id=args.vpc_id,
                cidr_block=cidr,
                availability_zone=zone,
                map_public_ip_on_launch=False,
                tags={**tags, "Name": f"{name}-lambda-{i}"},
                opts=child,
            )
            more_subnets.append(more)
            more_associations.append(aws.ec2.RouteTableAssociation(
                f"{name}-lambda-rt-assoc-{i}", subnet_id=more.id, route_table_id=route_table.id, opts=child))
        return _Network(subnet, association, more_subnets, more_associations, lambda_sg, apid_rule, s3_endpoint,
                        egress)

    def _egress(self, name: str, args: SnapshotScheduleArgs, lambda_sg: aws.ec2.SecurityGroup,
                s3_endpoint: aws.ec2.VpcEndpoint) -> list[aws.vpc.SecurityGroupEgressRule]:
        """The Lambda's only ways out: apid on the node, and HTTPS to S3 through the gateway endpoint."""
        child = pulumi.ResourceOptions(parent=self)
        return [
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-lambda-to-apid",
                security_group_id=lambda_sg.id,
                referenced_security_group_id=args.node_security_group_id,
                ip_protocol="tcp",
                from_port=APID_PORT,
                to_port=APID_PORT,
                opts=child,
            ),
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-lambda-to-s3",
                security_group_id=lambda_sg.id,
                prefix_list_id=s3_endpoint.prefix_list_id,
                ip_protocol="tcp",
                from_port=443,
                to_port=443,
                opts=child,
            ),
        ]

    def _runner(self, name: str, args: SnapshotScheduleArgs, network: _Network, retries: RetrySettings) -> _Runner:
        """The function, its role, its log group, and where a run that fails every attempt is recorded."""
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.tags)
        role, role_ready = self._role(name, args)
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs", name=f"/talos-dr/{name}/snapshots", retention_in_days=30, tags=tags, opts=child
        )
        # Where an exhausted run is recorded (the on-failure destination below); kept 14 days, encrypted at rest.
        failed_runs = aws.sqs.Queue(
            f"{name}-failed-runs-queue",
            message_retention_seconds=FAILED_RUN_RETENTION_SECONDS,
            sqs_managed_sse_enabled=True,
            tags=tags,
            opts=child,
        )
        destination_access = aws.iam.RolePolicy(
            f"{name}-lambda-destination-policy",
            role=role.id,
            policy=failed_runs.arn.apply(destination_policy),
            opts=child,
        )
        code = args.code if args.code is not None else package.lambda_package(args.wheel_dir)
        function = aws.lambda_.Function(
            f"{name}-snapshot",
            runtime=package.LAMBDA_RUNTIME,
            architectures=["x86_64"],
            handler=package.LAMBDA_HANDLER,
            role=role.arn,
            code=code,
            timeout=LAMBDA_TIMEOUT,
            memory_size=512,  # CPU scales with memory; the stream holds a few 8 MiB parts at most
            # Every node shares the node security group, whose apid rule admits this group: one rule reaches them all.
            vpc_config={"subnet_ids": [network.subnet.id, *(sn.id for sn in network.more_subnets)],
                        "security_group_ids": [network.security_group.id]},
            logging_config={"log_format": "Text", "log_group": log_group.name},
            environment={"variables": _environment(args)},
            description=f"etcd snapshot of {args.cluster_name} to S3 ({args.schedule_expression})",
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*role_ready, network.association,
                                                                 *network.more_associations]),
        )
        # One retry layer for the function's failures: Lambda's asynchronous retries (retry_settings says what AWS does
        # and why they never reach the next run). A run that fails every attempt (or whose event grows too old) is
        # recorded in the failed-runs queue, which infra/alarms.py watches.
        aws.lambda_.FunctionEventInvokeConfig(
            f"{name}-snapshot-async",
            function_name=function.name,
            maximum_retry_attempts=retries.lambda_attempts,
            maximum_event_age_in_seconds=retries.lambda_max_age,
            destination_config={"on_failure": {"destination": failed_runs.arn}},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[destination_access]),
        )
        return _Runner(function, role, log_group, failed_runs)

    def _role(self, name: str, args: SnapshotScheduleArgs) -> tuple[aws.iam.Role, list[pulumi.Resource]]:
        """The runner's role: its VPC ENIs, and the snapshot keys and credential ``lambda_policy`` names, never a
        delete. Returns the role and what must exist before the function may use it."""
        child = pulumi.ResourceOptions(parent=self)
        prefix = args.snapshot_prefix
        role = aws.iam.Role(
            f"{name}-lambda-role",
            assume_role_policy=assume_role_policy("lambda.amazonaws.com"),
            description="Scheduled etcd snapshots: write snapshots, read the backup credential",
            tags=dict(args.tags),
            opts=child,
        )
        vpc_access = aws.iam.RolePolicyAttachment(
            f"{name}-lambda-vpc-access",
            role=role.name,
            policy_arn="arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole",
            opts=child,
        )
        role_policy = aws.iam.RolePolicy(
            f"{name}-lambda-policy",
            role=role.id,
            policy=pulumi.Output.from_input(args.bucket_arn).apply(lambda arn: lambda_policy(arn, prefix, CREDENTIAL_KEY)),
            opts=child,
        )
        return role, [vpc_access, role_policy]

    def _schedule(
        self, name: str, args: SnapshotScheduleArgs, function: aws.lambda_.Function, retries: RetrySettings
    ) -> aws.scheduler.Schedule:
        """The schedule, in its own group, so the scheduler role's trust can name it (aws:SourceArn) before the
        schedule exists; the role may invoke this function and nothing else."""
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.tags)
        group = aws.scheduler.ScheduleGroup(f"{name}-schedules", tags=tags, opts=child)
        scheduler_role = aws.iam.Role(
            f"{name}-scheduler-role",
            assume_role_policy=pulumi.Output.all(args.account_id, group.arn).apply(
                lambda a: assume_role_policy("scheduler.amazonaws.com", a[0], schedule_source_arns(a[1]))
            ),
            description="EventBridge Scheduler: invoke the etcd snapshot Lambda",
            tags=tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-scheduler-policy", role=scheduler_role.id, policy=function.arn.apply(invoke_policy), opts=child
        )
        return aws.scheduler.Schedule(
            f"{name}-schedule",
            group_name=group.name,
            description=f"etcd snapshots of {args.cluster_name}",
            schedule_expression=args.schedule_expression,
            schedule_expression_timezone="UTC",
            flexible_time_window={"mode": "OFF"},
            state="ENABLED",
            target={
                "arn": function.arn,
                "role_arn": scheduler_role.arn,
                "input": json.dumps({"trigger": "schedule"}),
                # Delivery only (retry_settings): the function's failures are Lambda's to retry.
                "retry_policy": {"maximum_retry_attempts": retries.scheduler_attempts,
                                 "maximum_event_age_in_seconds": retries.scheduler_max_age},
            },
            opts=child,
        )

    def _watch(
        self,
        name: str,
        args: SnapshotScheduleArgs,
        interval_seconds: int,
        runner: _Runner,
        not_after: pulumi.Output[str],
        depends_on: Sequence[pulumi.Resource],
    ) -> Any:
        """Proof and staleness: one snapshot through the Lambda on create, stale backups flagged at preview."""
        from infra.providers.backup_check import EtcdSnapshotSchedule, EtcdSnapshotScheduleArgs

        return EtcdSnapshotSchedule(
            f"{name}-watch",
            EtcdSnapshotScheduleArgs(
                bucket=args.bucket_name,
                interval_seconds=interval_seconds,
                prefix=args.snapshot_prefix,
                region=args.region,
                cluster=args.cluster_name,
                function_name=runner.function.name,
                log_group=runner.log_group.name,
                credential_not_after=not_after,
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)),
        )

    def _publish(
        self, runner: _Runner, schedule: aws.scheduler.Schedule, not_after: pulumi.Output[str], watch: Any
    ) -> None:
        self.function_name = runner.function.name
        self.function_arn = runner.function.arn
        self.role_arn = runner.role.arn
        self.credential_key = pulumi.Output.from_input(CREDENTIAL_KEY)
        self.credential_not_after = not_after
        self.schedule_arn = schedule.arn
        self.failed_runs_queue_name = runner.failed_runs.name
        self.failed_runs_queue_arn = runner.failed_runs.arn
        self.log_group_name = runner.log_group.name
        self.newest_snapshot_key = watch.newest_snapshot_key if watch else pulumi.Output.from_input(None)
        self.newest_snapshot_time = watch.newest_snapshot_time if watch else pulumi.Output.from_input(None)
        self.backups = watch.backups if watch else pulumi.Output.from_input(None)
        self.register_outputs(
            {
                "function_name": self.function_name,
                "function_arn": self.function_arn,
                "role_arn": self.role_arn,
                "credential_key": self.credential_key,
                "credential_not_after": self.credential_not_after,
                "schedule_arn": self.schedule_arn,
                "failed_runs_queue_name": self.failed_runs_queue_name,
                "failed_runs_queue_arn": self.failed_runs_queue_arn,
                "log_group_name": self.log_group_name,
                "newest_snapshot_key": self.newest_snapshot_key,
                "newest_snapshot_time": self.newest_snapshot_time,
                "backups": self.backups,
            }
        )


# Every control-plane node's private IP, comma-separated, node 0 first (snapshot_lambda.handler takes the snapshot
# from a healthy member of them); ENV_NODE stays node 0's for a handler that reads only that. Set only with more than
# one node, so a one-node stack's function is unchanged.
ENV_NODES = "TALOS_DR_NODES"


def _environment(args: SnapshotScheduleArgs) -> dict[str, pulumi.Input[str]]:
    """The runner's settings (snapshot_lambda.handler reads them)."""
    nodes: dict[str, pulumi.Input[str]] = {}
    if args.more_node_private_ips:
        nodes[ENV_NODES] = pulumi.Output.all(args.node_private_ip, *args.more_node_private_ips).apply(",".join)
    return {
        lh.ENV_BUCKET: args.bucket_name,
        lh.ENV_NODE: args.node_private_ip,
        **nodes,
        lh.ENV_CREDENTIAL_KEY: CREDENTIAL_KEY,
        lh.ENV_CLUSTER: args.cluster_name,
        lh.ENV_PREFIX: args.snapshot_prefix,
        lh.ENV_PORT: str(APID_PORT),
        lh.ENV_AGE_RECIPIENTS: ",".join(args.age_recipients),
        lh.ENV_STALL_TIMEOUT: str(int(lh.DEFAULT_STALL_TIMEOUT)),
        lh.ENV_METRICS_NAMESPACE: METRICS_NAMESPACE,
        lh.ENV_ETCD_QUOTA: str(args.etcd_quota_bytes),
    }


__all__ = [
    "RetrySettings",
    "SnapshotSchedule",
    "SnapshotScheduleArgs",
    "credential_json",
    "lambda_subnet_cidr",
    "lambda_subnet_cidrs",
    "retry_settings",
]
