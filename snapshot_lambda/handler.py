"""The scheduled snapshot runner: an AWS Lambda handler (and the same code path, callable in-process).

Every run: read the ``os:etcd:backup`` credential from its object in the backup bucket (readable by this
function's role alone; it logs how many days the certificate has left), stream ``EtcdSnapshot`` from the node's
private address straight into a multipart upload at ``<prefix>etcd-snapshot-<UTC>.db`` (the name, checksum and
metadata dr.backup uses), verifying the hash trailer on the way. The upload completes only when the trailer
verifies; any failure aborts it, so no partial object is ever left. Nothing touches local disk.

Settings come from the environment (set by ``infra/schedule.py``):

==============================  ================================================================
``TALOS_DR_BUCKET``             bucket name (required)
``TALOS_DR_NODE``               node address apid is reached at (required; its certificate's IP SAN)
``TALOS_DR_NODES``              every control-plane node's private IP, comma-separated (several nodes only): the
                                members are asked first and the snapshot comes from a healthy member of a quorum
``TALOS_DR_CREDENTIAL_KEY``     key of the credential JSON object in the bucket (required)
``TALOS_DR_CLUSTER``            cluster name recorded in object metadata (required)
``TALOS_DR_PREFIX``             key prefix, default ``snapshots/``
``TALOS_DR_APID_PORT``          apid port, default 50000
``TALOS_DR_TIMEOUT``            seconds for the whole stream, default 840 (Lambda's limit is 900)
``TALOS_DR_AGE_RECIPIENTS``     comma-separated age public keys to encrypt to; empty: compressed only
``TALOS_DR_STALL_TIMEOUT``      seconds without a byte before the stream is stopped, default 45
``TALOS_DR_ETCD_QUOTA_BYTES``   the node's etcd quota (--quota-backend-bytes), default 2 GiB
``TALOS_DR_METRICS_NAMESPACE``  CloudWatch namespace of the run's metrics, default ``TalosDR``
==============================  ================================================================

Every run, success or failure, prints one CloudWatch Embedded Metric Format line (``dr.core.metrics``): the outcome,
its seconds and bytes, the credential's days left, and the node's etcd DB size, quota and active alarms
(``EtcdStatus``/``EtcdAlarmList``, asked after a successful snapshot). CloudWatch Logs turns it into metrics, which
the stack's alarms watch (``infra/alarms.py``).

With several nodes (``TALOS_DR_NODES``), every member is asked first (``EtcdStatus``, ``EtcdAlarmList``,
``EtcdMemberList``, all allowed to ``os:etcd:backup``); ``dr.core.member_choice`` picks a healthy member of the
majority (a follower that is up to date, else the leader) or refuses with ``NoQuorum`` (exit 28 in the log line):
no snapshot from a minority. The member used is recorded in the object's metadata and in the metrics line. When
that member's snapshot fails on the node's side, the next member of the majority is tried while the run's time lasts.

Imports here stay light (h2, protobuf, boto3; no grpcio): this module is the Lambda entry point
``snapshot_lambda.handler.handler``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from dr.adapters import s3
from dr.adapters.store import S3Store
from dr.adapters.talosapi import APID_PORT, TalosClient, TalosCredentials
from dr.core import member_choice, metrics, naming, outputs
from dr.core.errors import ConfigError, DRError
from dr.core.etcd_health import DEFAULT_QUOTA_BYTES, EtcdHealth
from dr.core.timefmt import iso_utc

log = logging.getLogger("talos-dr.schedule")

ENV_BUCKET = "TALOS_DR_BUCKET"
ENV_NODE = "TALOS_DR_NODE"
ENV_NODES = "TALOS_DR_NODES"  # infra/schedule.py sets it with more than one node, node 0 first
ENV_CREDENTIAL_KEY = "TALOS_DR_CREDENTIAL_KEY"
ENV_CLUSTER = "TALOS_DR_CLUSTER"
ENV_PREFIX = "TALOS_DR_PREFIX"
ENV_PORT = "TALOS_DR_APID_PORT"
ENV_TIMEOUT = "TALOS_DR_TIMEOUT"
ENV_AGE_RECIPIENTS = "TALOS_DR_AGE_RECIPIENTS"
ENV_STALL_TIMEOUT = "TALOS_DR_STALL_TIMEOUT"
ENV_ETCD_QUOTA = "TALOS_DR_ETCD_QUOTA_BYTES"
ENV_METRICS_NAMESPACE = "TALOS_DR_METRICS_NAMESPACE"
# A stream that brings nothing for this long is stopped (talosapi's Stalled): with etcd down, machined accepts
# EtcdSnapshot and sends nothing (its etcd client waits with no deadline), so without it a run
# would hang until the Lambda's own timeout and blame the network. Under a minute, so a stuck run is reported well before the next one; dr.backup's is 30.
DEFAULT_STALL_TIMEOUT = 45.0
SOURCE = "schedule"  # the object's `source` metadata; dr.backup writes "dr.backup"
MEMBER_TIMEOUT = 10.0  # per call when asking each member; a node that is off costs one connect timeout (10 s)


@dataclass(frozen=True)
class RunnerSettings:
    bucket: str
    node: str
    credential_key: str  # the credential JSON's key in ``bucket``
    cluster: str
    prefix: str = outputs.DEFAULT_SNAPSHOT_PREFIX
    port: int = APID_PORT
    timeout: float = 840.0
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    etcd_quota: int = DEFAULT_QUOTA_BYTES
    namespace: str = metrics.NAMESPACE
    nodes: tuple[str, ...] = ()  # every control-plane node's private IP (TALOS_DR_NODES); empty: ``node`` alone

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RunnerSettings:
        env = os.environ if env is None else env
        missing = [k for k in (ENV_BUCKET, ENV_NODE, ENV_CREDENTIAL_KEY, ENV_CLUSTER) if not env.get(k)]
        if missing:
            raise ConfigError(f"the snapshot runner is missing {', '.join(missing)}", "redeploy with `pulumi up`")
        try:
            port = int(env.get(ENV_PORT) or APID_PORT)
            timeout = float(env.get(ENV_TIMEOUT) or 840)
            stall = float(env.get(ENV_STALL_TIMEOUT) or DEFAULT_STALL_TIMEOUT)
            quota = int(env.get(ENV_ETCD_QUOTA) or DEFAULT_QUOTA_BYTES)
        except ValueError as exc:
            raise ConfigError(f"{ENV_PORT}/{ENV_TIMEOUT}/{ENV_STALL_TIMEOUT}/{ENV_ETCD_QUOTA} must be numbers: {exc}",
                              "redeploy with `pulumi up`") from exc
        if not 0 < stall <= timeout or quota <= 0:
            raise ConfigError(f"{ENV_STALL_TIMEOUT} must be in (0, {ENV_TIMEOUT}] and {ENV_ETCD_QUOTA} positive",
                              "redeploy with `pulumi up`")
        return cls(
            bucket=env[ENV_BUCKET],
            node=env[ENV_NODE],
            credential_key=env[ENV_CREDENTIAL_KEY],
            cluster=env[ENV_CLUSTER],
            prefix=env.get(ENV_PREFIX) or outputs.DEFAULT_SNAPSHOT_PREFIX,
            port=port,
            timeout=timeout,
            stall_timeout=stall,
            etcd_quota=quota,
            namespace=env.get(ENV_METRICS_NAMESPACE) or metrics.NAMESPACE,
            nodes=tuple(dict.fromkeys(n.strip() for n in (env.get(ENV_NODES) or "").split(",") if n.strip())),
        )


@dataclass(frozen=True)
class RunResult:
    bucket: str
    key: str
    size: int  # the snapshot's own size (plaintext)
    stored_size: int  # bytes in the bucket (compressed, maybe encrypted)
    sha256: str  # the plaintext's SHA-256 (its trailer)
    format: str  # zstd or zstd+age
    taken_at: str  # ISO 8601 UTC

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The credential is a few KiB of JSON; anything much larger at its key is not ours.
MAX_CREDENTIAL_BYTES = 64 * 1024
# The Lambda warns (and `pulumi preview` does, infra/providers/backup_check.py) this long before the certificate ends.
EXPIRY_WARNING_DAYS = 30


def read_credentials(bucket: str, key: str, client=None) -> TalosCredentials:
    """The client credential JSON from ``s3://bucket/key`` (the bucket policy lets only this function's role and the
    deployer read it; see infra/bucket.py)."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = client or s3.make_client()
    where = f"s3://{bucket}/{key}"
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        value = body.read(MAX_CREDENTIAL_BYTES + 1)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise ConfigError(
            f"reading the backup credential {where} failed: {code}",
            "the Lambda role must be allowed s3:GetObject on it (and the bucket policy must name the role); "
            "re-run `pulumi up`",
        ) from exc
    except BotoCoreError as exc:
        raise ConfigError(f"reading the backup credential {where} failed: {exc}",
                          "check the network path to S3 (the Lambda subnet's gateway endpoint)") from exc
    if len(value) > MAX_CREDENTIAL_BYTES:
        raise ConfigError(f"{where} is larger than {MAX_CREDENTIAL_BYTES} bytes: not a credential",
                          "re-run `pulumi up` to write the credential again")
    return TalosCredentials.from_json(value.decode("utf-8", "replace"), where=where)


def log_credential_expiry(credentials: TalosCredentials, now: datetime) -> float | None:
    """Log the days the client certificate has left (a warning within ``EXPIRY_WARNING_DAYS``); returns them."""
    from dr.core.cert_expiry import CertificateFormatError, days_left, not_after

    try:
        left, end = days_left(credentials.cert_pem, now), not_after(credentials.cert_pem)
    except CertificateFormatError as exc:
        log.warning(json.dumps({"event": "credential-expiry-unknown", "message": str(exc)}))
        return None
    event = {"event": "credential-expiry", "days_left": int(left), "not_after": iso_utc(end)}
    if left < EXPIRY_WARNING_DAYS:
        log.warning(json.dumps({**event, "message": "the os:etcd:backup certificate expires soon: run `pulumi up`"}))
    else:
        log.info(json.dumps(event))
    return left


def take_snapshot(
    settings: RunnerSettings,
    credentials: TalosCredentials,
    *,
    s3_client=None,
    now: datetime | None = None,
    recipients: list | None = None,
    member: dict[str, str] | None = None,
) -> RunResult:
    """Stream one snapshot from the node into the bucket. Raises a ``DRError``; leaves no object on failure.
    ``member``: ``Choice.record()`` of the etcd member ``settings.node`` is (several nodes), kept in the metadata."""
    now = now or datetime.now(UTC)
    client = s3_client or s3.make_client()
    if recipients is None:
        recipients = recipients_from_env()
    store = S3Store(client, settings.bucket, settings.prefix)
    # The SHA-256 and size are only known once the stream ends: the store records them as tags after the upload
    # (metadata cannot change after it). Compressed always, encrypted when the stack names age recipients: the
    # Lambda holds public keys only, never an identity.
    meta = s3.snapshot_metadata(taken_at=now, cluster=settings.cluster, source=SOURCE, member=member)
    with TalosClient(settings.node, credentials, port=settings.port, timeout=settings.timeout,
                     idle_timeout=settings.stall_timeout) as talos:
        chunks = talos.iter_etcd_snapshot()
        try:
            entry = store.put(chunks, naming.snapshot_name(now), compress=True, recipients=recipients, metadata=meta,
                              label=f"etcd snapshot from {talos.node}")
        finally:
            chunks.close()  # cancels the RPC if the upload stopped early
    assert entry.key is not None and entry.sha256 is not None and entry.plain_size is not None
    if entry.warning:
        log.warning(json.dumps({"event": "latest-not-pinned", "key": entry.key, "warning": entry.warning}))
    return RunResult(
        bucket=settings.bucket,
        key=entry.key,
        size=entry.plain_size,
        stored_size=entry.size,
        sha256=entry.sha256,
        format=entry.format,
        taken_at=iso_utc(now),
    )


def recipients_from_env(env: Mapping[str, str] | None = None) -> list:
    """The age recipients in ``TALOS_DR_AGE_RECIPIENTS`` (comma-separated public keys; empty: not encrypted)."""
    from dr.core.age_keys import AgeKeyError, recipients, split_recipients

    env = os.environ if env is None else env
    try:
        return recipients(split_recipients(env.get(ENV_AGE_RECIPIENTS, "")), where=ENV_AGE_RECIPIENTS)
    except AgeKeyError as exc:
        raise ConfigError(str(exc), "fix the stack's ageRecipients and run `pulumi up`") from None


# The store sends IfNoneMatch on PutObject/CompleteMultipartUpload (dr.adapters.s3), which botocore accepts from 1.35.
MIN_BOTOCORE = (1, 35)


def check_sdk(version: str | None = None) -> str:
    """The botocore version this run uses; a ``ConfigError`` when it is too old for ``IfNoneMatch``.

    The package ships botocore pinned (infra/lambda_package.py LAMBDA_REQUIREMENTS_SDK) and Lambda imports the package's
    copy first; this catches a package built without it, which would fall back to whatever the runtime bundles."""
    if version is None:
        import botocore

        version = botocore.__version__
    try:
        have = tuple(int(x) for x in version.split(".")[:2])
    except ValueError:
        have = (0, 0)
    if have < MIN_BOTOCORE:
        raise ConfigError(
            f"botocore {version} is too old for the snapshot runner (conditional writes need "
            f"{'.'.join(map(str, MIN_BOTOCORE))} or newer)",
            "the Lambda package must ship the pinned boto3/botocore: run `pulumi up` to rebuild it",
        )
    return version


def etcd_health(settings: RunnerSettings, credentials: TalosCredentials) -> EtcdHealth | None:
    """The node's etcd DB size, quota and alarms (EtcdStatus, EtcdAlarmList); None, with a warning logged, when the
    node does not say: these are for the metrics, and must not fail a run whose snapshot is already stored."""
    try:
        with TalosClient(settings.node, credentials, port=settings.port, timeout=settings.stall_timeout) as talos:
            health = talos.etcd_health(settings.etcd_quota, timeout=min(settings.stall_timeout, 20.0))
    except DRError as exc:
        log.warning(json.dumps({"event": "etcd-status-unknown", "message": str(exc)}))
        return None
    if health.alarms or health.percent >= 80:
        log.warning(json.dumps({"event": "etcd-needs-attention", "alarms": list(health.alarms),
                                "db_size": health.db_size, "quota": health.quota,
                                "message": "etcd's DB is near its quota or has an alarm: see docs/MONITORING.md"}))
    return health


def run(env: Mapping[str, str] | None = None, *, now: datetime | None = None,
        observed: dict[str, Any] | None = None) -> RunResult:
    """One scheduled run from environment settings: read the credential, take and upload the snapshot, then ask the
    node about its etcd. ``observed`` (when given) receives what the metrics report: ``days_left``, ``etcd``."""
    observed = {} if observed is None else observed
    settings = RunnerSettings.from_env(env)
    observed["settings"] = settings
    check_sdk()
    client = s3.make_client()
    creds = read_credentials(settings.bucket, settings.credential_key, client)
    observed["days_left"] = log_credential_expiry(creds, now or datetime.now(UTC))
    choice = choose_member(settings, creds, observed)
    settings, result = _snapshot_from_members(settings, creds, choice, observed, client, now)
    observed["etcd"] = etcd_health(settings, creds)
    return result


def _snapshot_from_members(settings: RunnerSettings, credentials: TalosCredentials,
                           choice: member_choice.Choice | None, observed: dict[str, Any], client,
                           now: datetime | None) -> tuple[RunnerSettings, RunResult]:
    """``take_snapshot`` from the chosen member; when its snapshot fails on the node's side (``MEMBER_FAILURES``),
    from the next member of the majority, while the run's time lasts. Each failure is logged (``member-failed``)
    and named in the metrics line (``EtcdMembersFailed``), so a sick member shows even when the run succeeds.
    One node: one attempt."""
    import time

    start = time.monotonic()
    deadline = start + settings.timeout
    began = now or datetime.now(UTC)
    attempts: list[RunnerSettings] = []

    def attempt(c: member_choice.Choice | None) -> RunResult:
        run_settings = settings
        if c is not None:
            host, port = _host_port(c.source.node.public_ip, settings.port)
            run_settings = replace(settings, node=host, port=port, timeout=max(deadline - time.monotonic(), 1.0))
        attempts.append(run_settings)
        # a later attempt's object is named for when it started
        taken_at = began if len(attempts) == 1 else began + timedelta(seconds=time.monotonic() - start)
        return take_snapshot(run_settings, credentials, s3_client=client, now=taken_at,
                             member=c.record() if c is not None else None)

    def failed(c: member_choice.Choice, exc: DRError, nxt: member_choice.Choice) -> None:
        who = c.record()
        log.warning(json.dumps({"event": "member-failed", "member": who, "error": type(exc).__name__,
                                "message": str(exc), "next": nxt.record(), "reason": nxt.reason}))
        observed.setdefault("failed_members", []).append(f"{who['node']} ({who['ip']}): {type(exc).__name__}: {exc}")
        observed["member"] = nxt.record()

    result, _ = member_choice.from_members(choice, attempt, on_failure=failed,
                                           may_go_on=lambda: deadline - time.monotonic() >= 2 * settings.stall_timeout)
    return attempts[-1], result


def _host_port(entry: str, default: int) -> tuple[str, int]:
    host, sep, port = entry.rpartition(":")
    return (host, int(port)) if sep and host.count(":") == 0 and port.isdigit() else (entry, default)


def choose_member(settings: RunnerSettings, credentials: TalosCredentials,
                  observed: dict[str, Any]) -> member_choice.Choice | None:
    """With several nodes: ask every member (dialing each private IP, as the function does inside the VPC) and pick
    the one to snapshot from; ``NoQuorum`` when no majority is healthy and agrees on a leader. None with one node.
    What was seen goes into ``observed`` (``member``, ``members``) for the log and the metrics line."""
    if len(settings.nodes) <= 1:
        return None
    from dr.adapters.talosapi.members import ask_all
    from dr.core.cluster_nodes import ClusterNode

    # An entry may carry a port ("ip:port"; the stack writes bare IPs, apid is on 50000): kept in public_ip.
    nodes = [ClusterNode(name=_host_port(e, settings.port)[0], private_ip=_host_port(e, settings.port)[0],
                         public_ip=e) for e in settings.nodes]
    timeout = min(settings.stall_timeout, MEMBER_TIMEOUT)

    def dial(n: ClusterNode) -> TalosClient:
        host, port = _host_port(n.public_ip, settings.port)
        return TalosClient(host, credentials, port=port, timeout=3 * timeout + 5)

    answers = ask_all(nodes, dial, quota=settings.etcd_quota, timeout=timeout)
    try:
        choice = member_choice.choose(nodes, answers, command="talos-dr backup")
    except DRError:
        observed["members"] = [s.describe() for s in member_choice.judge(nodes, answers).states]
        observed["member"] = {"quorum": "none"}
        raise
    observed["members"] = [s.describe() for s in choice.judgement.states]
    observed["member"] = choice.record()
    event = {"event": "etcd-members", "member": choice.record(), "members": observed["members"],
             "reason": choice.reason}
    log.info(json.dumps(event))
    return choice


def run_metrics(ok: bool, seconds: float, observed: Mapping[str, Any], result: RunResult | None) -> dict[str, float]:
    """The metric values of one run (names from ``dr.core.metrics``); what is unknown is left out."""
    values: dict[str, float] = {
        metrics.SNAPSHOT_SUCCESS.name: 1.0 if ok else 0.0,
        metrics.SNAPSHOT_SECONDS.name: round(seconds, 3),
    }
    if result is not None:
        values[metrics.SNAPSHOT_BYTES.name] = float(result.size)
    if observed.get("days_left") is not None:
        values[metrics.CREDENTIAL_DAYS_LEFT.name] = round(float(observed["days_left"]), 4)
    health = observed.get("etcd")
    if isinstance(health, EtcdHealth):
        values[metrics.ETCD_DB_SIZE.name] = float(health.db_size)
        values[metrics.ETCD_QUOTA.name] = float(health.quota)
        values[metrics.ETCD_DB_PERCENT.name] = round(health.percent, 2)
        values[metrics.ETCD_ALARMS.name] = float(len(health.alarms))
    return values


def emit_metrics(line: str) -> None:
    """Print the EMF line on its own: Lambda sends each stdout line to the log group as one event, unchanged (the
    function's log format is Text), which is what CloudWatch Logs needs to extract the metrics."""
    print(line, flush=True)


def handler(event: Any, context: Any) -> dict[str, Any]:
    """AWS Lambda entry point. Success returns the object's facts; failure raises, which marks the invocation
    failed: Lambda retries it (its asynchronous retries, infra/schedule.py retry_settings), and records a run whose
    every attempt failed in the failed-runs queue. Every attempt prints its metrics first."""
    import time

    logging.getLogger().setLevel(logging.INFO)
    began, now = time.monotonic(), datetime.now(UTC)
    observed: dict[str, Any] = {}
    result: RunResult | None = None
    try:
        result = run(observed=observed)
    except Exception as exc:
        settings = observed.get("settings")
        _emit(False, time.monotonic() - began, observed, None, settings, now,
              {"event": "snapshot-failed", "error": type(exc).__name__})
        if isinstance(exc, DRError):
            log.error(json.dumps({"event": "snapshot-failed", "error": type(exc).__name__, "message": str(exc),
                                  "exit_code": int(exc.exit_code)}))
        raise
    _emit(True, time.monotonic() - began, observed, result, observed.get("settings"), now,
          {"event": "snapshot-uploaded", "key": result.key})
    log.info(json.dumps({"event": "snapshot-uploaded", **result.to_dict()}))
    return result.to_dict()


def _emit(ok: bool, seconds: float, observed: Mapping[str, Any], result: RunResult | None,
          settings: RunnerSettings | None, now: datetime, properties: Mapping[str, Any]) -> None:
    cluster = settings.cluster if settings else os.environ.get(ENV_CLUSTER, "") or "unknown"
    namespace = settings.namespace if settings else metrics.NAMESPACE
    properties = {**properties, **metrics.member_properties(observed.get("member"), observed.get("members"),
                                                            observed.get("failed_members"))}
    try:
        emit_metrics(metrics.emf_line(run_metrics(ok, seconds, observed, result), cluster=cluster, now=now,
                                      namespace=namespace, properties=properties))
    except Exception as exc:  # pragma: no cover - a metrics bug must not hide the run's own outcome
        log.error(json.dumps({"event": "metrics-failed", "message": str(exc)}))
