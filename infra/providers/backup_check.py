"""``EtcdSnapshotSchedule``: a Pulumi dynamic resource that proves and watches the scheduled backups.

* **create** takes one snapshot through the production path and checks it landed and verifies (the pipeline is
  proven the day it is deployed);
* **check/diff** look at the newest snapshot in the bucket: when it is older than twice the schedule's interval, the
  ``backups`` input becomes ``"stale since <time> ..."``, so ``pulumi preview`` shows
  ``~ backups: "fresh" => "stale since ..."`` and warns, and ``pulumi up`` runs **update**, which takes a catch-up
  snapshot;
* **read** (``pulumi refresh``) updates the newest-snapshot outputs; **delete** never deletes snapshots.

How the snapshot is triggered: the machine running ``pulumi up`` usually cannot reach the node's private address,
so by default the provider invokes the schedule's Lambda (``lambda:InvokeFunction``, synchronous) — the very code
EventBridge Scheduler runs. Given ``node`` and ``credential_key`` instead of ``function_name``, it runs the same runner
in-process (``snapshot_lambda.handler.take_snapshot``): that is how the tests drive it against the simulated apid and moto,
and it also works from a machine that can reach apid.

Serialization (the provider is pickled by dill into state): this module creates nothing at import, the provider
holds no attributes, and every client is built inside the method that uses it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)

from dr.core import outputs
from dr.core.freshness import FRESH, freshness, stale_since
from dr.core.timefmt import iso_utc

UNKNOWN = "unknown"
# Inputs whose change means "reconfigure" (and so a proving snapshot); `backups` is computed by check().
# A new credential_not_after is a rotated certificate: proving a snapshot with it is the point.
CONFIG_KEYS = ("bucket", "prefix", "region", "interval_seconds", "function_name", "node", "port", "credential_key",
               "cluster", "credential_not_after")
# `pulumi preview` warns when the deployed certificate has less than this left (the Lambda logs it on every run).
CREDENTIAL_WARNING_DAYS = 30
OUTPUT_KEYS = ("newest_snapshot_key", "newest_snapshot_time", "stale_since", "proof_snapshot_key")
# The proving snapshot runs right after the cluster answers, while etcd may still be settling: retry what passes.
PROVE_RETRY_SECONDS = 600.0
PROVE_FIRST_DELAY = 5.0
PROVE_MAX_DELAY = 60.0
# What machined says while etcd is not serving yet (talos v1.13.9 internal/app/machined/internal/server/v1alpha1/
# v1alpha1_server.go EtcdSnapshot: "failed to create etcd client: ...", "failed reading etcd snapshot: ..." wrapping
# the etcd client's connection refused / deadline exceeded on 127.0.0.1:2379), and etcd's own transient refusals.
_ETCD_STARTING = ("failed to create etcd client", "connection refused", "deadline exceeded", "etcdserver: no leader",
                  "etcdserver: leader changed", "etcdserver: request timed out", "etcdserver: too many requests")


# --- adapters (built per call: nothing unpicklable is held) -------------------------------------------------------


def _is_unknown(v: Any) -> bool:
    from pulumi.runtime import rpc  # the sentinel for unknown values during preview

    return isinstance(v, str) and v == rpc.UNKNOWN


@dataclass(frozen=True)
class Newest:
    key: str
    taken_at: datetime  # by evidence: the name's time, never after S3 stored it


def newest_snapshot(props: dict[str, Any]) -> Newest | None:
    """The newest snapshot by evidence (dr.adapters.store.newest: a name in the future cannot keep `pulumi preview`
    saying fresh), pre-restore safety copies excluded; None when there is none."""
    from dr.adapters import s3
    from dr.adapters.store import S3Store, newest
    from dr.core.errors import SnapshotNotFound

    store = S3Store(s3.make_client(props.get("region") or None, profile=props.get("profile") or None), props["bucket"],
                    props.get("prefix") or outputs.DEFAULT_SNAPSHOT_PREFIX)
    try:
        e = newest(store)
    except SnapshotNotFound:
        return None
    assert e.key is not None
    return Newest(e.key, min(e.name.taken_at, e.modified))


class SnapshotTriggerError(RuntimeError):
    """Taking the proving snapshot failed: ``error_type`` is the runner's error class (``NodeUnreachable``,
    ``Timeout``, ``NodeError``, ...; the Lambda's ``errorType``), ``detail`` its message."""

    def __init__(self, message: str, error_type: str = "", detail: str = ""):
        super().__init__(message)
        self.error_type = error_type
        self.detail = detail or message


def transient_reason(error_type: str, detail: str) -> str | None:
    """Why a failed snapshot is worth retrying while the cluster starts (None: it is not). Pure, table-tested."""
    low = detail.lower()
    if "tls handshake" in low or "certificate" in low:
        return None  # a trust problem does not fix itself
    if error_type == "NodeUnreachable":
        return "the node does not answer yet"
    if error_type in ("Timeout", "Sandbox.Timedout") or "task timed out" in low:
        return "the snapshot timed out"
    if error_type in ("NodeError", "TruncatedSnapshot") and any(m in low for m in _ETCD_STARTING):
        return "etcd is not serving yet"
    if error_type in ("TooManyRequestsException", "ResourceNotReadyException", "ResourceConflictException"):
        return "the Lambda is not ready yet"
    return None


def _retry_delays(first: float = PROVE_FIRST_DELAY, cap: float = PROVE_MAX_DELAY):
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * 2)


def trigger_with_retry(
    props: dict[str, Any],
    trigger: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    *,
    budget_seconds: float = PROVE_RETRY_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """``trigger(props)``, retried with backoff (5 s doubling to 60 s) while the failure is transient, for at most
    ``budget_seconds``; then one ``RuntimeError`` line naming the attempts, the time and the last error."""
    trigger = trigger or trigger_snapshot
    start = clock()
    delays = _retry_delays()
    attempts = 0
    while True:
        attempts += 1
        try:
            return trigger(props)
        except Exception as exc:
            error_type, detail = _describe(exc)
            reason = transient_reason(error_type, detail)
            if reason is None:
                raise
            delay = next(delays)
            waited = clock() - start
            if waited + delay > budget_seconds:
                raise RuntimeError(
                    f"the proving etcd snapshot still failed after {attempts} attempts over {int(waited)} s "
                    f"({reason}): {_one_line(str(exc))} — check the node (`talosctl service etcd`), then run "
                    "`pulumi up` again"
                ) from exc
            _warn(f"proving etcd snapshot: {reason} ({_one_line(detail)[:200]}); retrying in {delay:.0f} s")
            sleep(delay)


def _describe(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, SnapshotTriggerError):
        return exc.error_type, exc.detail
    return type(exc).__name__, str(exc)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def trigger_snapshot(props: dict[str, Any]) -> dict[str, Any]:
    """Take one snapshot: invoke the Lambda, or run the runner in-process when given a reachable node."""
    if props.get("function_name"):
        return _invoke_lambda(props)
    from snapshot_lambda import handler as lh

    settings = lh.RunnerSettings(
        bucket=props["bucket"],
        node=props["node"],
        credential_key=props["credential_key"],
        cluster=props.get("cluster") or "talos",
        prefix=props.get("prefix") or outputs.DEFAULT_SNAPSHOT_PREFIX,
        port=int(props.get("port") or lh.APID_PORT),
        timeout=300.0,
    )
    from dr.adapters import s3

    client = s3.make_client(props.get("region") or None, profile=props.get("profile") or None)
    creds = lh.read_credentials(settings.bucket, settings.credential_key, client)
    return lh.take_snapshot(settings, creds, s3_client=client).to_dict()


def _invoke_lambda(props: dict[str, Any]) -> dict[str, Any]:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    fn = props["function_name"]
    # The run streams a whole snapshot; don't let botocore's 60 s read timeout (and its retries) re-run it.
    factory = boto3.Session(profile_name=props["profile"]) if props.get("profile") else boto3
    client = factory.client("lambda", region_name=props.get("region") or None,
                          config=Config(read_timeout=900, connect_timeout=10, retries={"max_attempts": 1}))
    try:
        resp = client.invoke(FunctionName=fn, InvocationType="RequestResponse",
                             Payload=json.dumps({"trigger": "pulumi"}).encode())
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise SnapshotTriggerError(f"invoking the snapshot Lambda {fn} failed: {exc}", code, str(exc)) from exc
    except BotoCoreError as exc:
        raise SnapshotTriggerError(f"invoking the snapshot Lambda {fn} failed: {exc}", type(exc).__name__) from exc
    payload = json.loads(resp["Payload"].read() or b"{}")
    if resp.get("FunctionError"):
        error_type = str(payload.get("errorType", "error")) if isinstance(payload, dict) else "error"
        detail = str(payload.get("errorMessage", payload)) if isinstance(payload, dict) else str(payload)
        # The function logs to its own group (infra/schedule.py logging_config), not /aws/lambda/<name>.
        group = props.get("log_group") or f"/talos-dr/{props.get('cluster') or '<clusterName>'}/snapshots"
        raise SnapshotTriggerError(
            f"the snapshot Lambda {fn} failed: {error_type}: {detail} (see its CloudWatch log group {group})",
            error_type, detail,
        )
    if not isinstance(payload, dict) or "key" not in payload:
        raise RuntimeError(f"the snapshot Lambda {fn} returned no object key: {payload!r}")
    return payload


def verify_object(props: dict[str, Any], key: str, expected_sha256: str | None) -> int:
    """Stream the object back (never to disk, never whole in memory), undo its zstd layer and check the hash trailer
    of the plaintext. Returns the snapshot's size. An age-encrypted object cannot be opened here (only public keys are
    in the stack, by design): then the SHA-256 the runner recorded with it must be the one it reported."""
    from dr.adapters import codec, s3
    from dr.core.errors import SnapshotEncrypted
    from dr.core.integrity import CHUNK, TrailerHasher

    client = s3.make_client(props.get("region") or None, profile=props.get("profile") or None)
    where = f"s3://{props['bucket']}/{key}"
    hasher = TrailerHasher(where)
    try:
        body = client.get_object(Bucket=props["bucket"], Key=key)["Body"]
        codec.decode(body.iter_chunks(CHUNK), hasher.update, label=where)
    except SnapshotEncrypted:
        info = s3.head_snapshot(client, props["bucket"], key)
        recorded = {**info.tags, **info.metadata}
        if not expected_sha256 or recorded.get(s3.META_SHA256) != expected_sha256:
            raise RuntimeError(f"{where} is encrypted and records SHA-256 {recorded.get(s3.META_SHA256)!r}, not the "
                               f"{expected_sha256!r} the runner reported") from None
        return int(recorded.get(s3.META_SIZE) or info.size)
    except Exception as exc:
        raise s3.translate(exc, "reading back", props["bucket"], key) from exc
    digest = hasher.finish()
    if expected_sha256 and digest.content_sha256 != expected_sha256:
        raise RuntimeError(f"{where} holds SHA-256 {digest.content_sha256[:16]}…, "
                           f"the runner reported {expected_sha256[:16]}…")
    return digest.size


def credential_expiry_warning(deployed: Any, proposed: Any, now: datetime | None = None,
                              days: int = CREDENTIAL_WARNING_DAYS) -> str | None:
    """Warn (and return the message) when the deployed backup certificate ends within ``days``.

    ``deployed`` is the notAfter in state (ISO 8601 UTC), ``proposed`` the one this `pulumi up` would write. The
    program mints a certificate for the current 180-day period, valid 365 days (dr.core.credentials), so one that is
    about to end is one no `pulumi up` has replaced for close to a year; the Lambda stops working when it does."""
    if not isinstance(deployed, str) or _is_unknown(deployed):
        return None
    try:
        end = datetime.strptime(deployed, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    left = (end - (now or datetime.now(UTC))).total_seconds() / 86400
    if left >= days:
        return None
    state = "expired on" if left < 0 else f"expires in {int(left)} days, on"
    rotate = (f"; `pulumi up` writes one valid until {proposed}" if isinstance(proposed, str) and proposed != deployed
              and not _is_unknown(proposed) else "; run `pulumi up` to rotate it")
    msg = f"the scheduled snapshots' os:etcd:backup certificate {state} {deployed}{rotate}"
    _warn(msg)
    return msg


def _warn(msg: str) -> None:
    try:
        pulumi.log.warn(msg)  # with no engine attached (the provider process) this prints to stderr
    except Exception:  # pragma: no cover - logging must never fail a diff
        print(f"warning: {msg}", file=sys.stderr)


# --- the provider ------------------------------------------------------------------------------------------------


class EtcdSnapshotScheduleProvider(ResourceProvider):
    """See the module docstring. Stateless: safe to pickle by reference."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        inputs = dict(news)
        failures = []
        interval = news.get("interval_seconds")
        if not _is_unknown(interval) and (not isinstance(interval, int | float) or interval <= 0):
            failures.append(CheckFailure("interval_seconds", "must be a positive number of seconds"))
        if not news.get("function_name") and not (news.get("node") and news.get("credential_key")):
            failures.append(CheckFailure("function_name", "give function_name (invoke the Lambda) or node and credential_key"))
        if _olds:
            credential_expiry_warning(_olds.get("credential_not_after"), news.get("credential_not_after"))
        inputs["backups"] = self._freshness(inputs) if not failures and _olds else UNKNOWN
        return CheckResult(inputs, failures)

    def _freshness(self, props: dict[str, Any], now: datetime | None = None) -> str:
        if any(_is_unknown(props.get(k)) for k in ("bucket", "prefix", "interval_seconds")):
            return UNKNOWN
        where = f"s3://{props['bucket']}/{props.get('prefix') or ''}"
        try:
            newest = newest_snapshot(props)
        except Exception as exc:  # no credentials at preview time must not break the preview
            _warn(f"cannot list {where} to check backup freshness: {exc}")
            return UNKNOWN
        status = freshness(newest.taken_at if newest else None, timedelta(seconds=float(props["interval_seconds"])),
                           now or datetime.now(UTC), where)
        if status.startswith("stale"):
            _warn(f"etcd backups in {where} are {status}; `pulumi up` takes a catch-up snapshot")
        return status

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in CONFIG_KEYS if olds.get(k) != news.get(k)]
        stale = str(news.get("backups", "")).startswith("stale")
        return DiffResult(changes=bool(changed) or stale, replaces=[], stables=[], delete_before_replace=False)

    def _prove(self, props: dict[str, Any]) -> dict[str, Any]:
        result = trigger_with_retry(props)
        key = result["key"]
        size = verify_object(props, key, result.get("sha256"))
        newest = newest_snapshot(props)
        if newest is None:
            raise RuntimeError(f"snapshot {key} was uploaded but s3://{props['bucket']}/{props.get('prefix')} lists none")
        interval = timedelta(seconds=float(props["interval_seconds"]))
        pulumi.log.info(f"etcd snapshot s3://{props['bucket']}/{key} ({size} bytes) verified")
        return {
            **props,
            "backups": FRESH,
            "proof_snapshot_key": key,
            "newest_snapshot_key": newest.key,
            "newest_snapshot_time": iso_utc(newest.taken_at),
            "stale_since": iso_utc(stale_since(newest.taken_at, interval)),
        }

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._prove(props)
        return CreateResult(id_=f"{props['bucket']}/{props.get('prefix') or ''}", outs=outs)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._prove(news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        outs = dict(props)
        newest = newest_snapshot(props)
        if newest is not None:
            interval = timedelta(seconds=float(props["interval_seconds"]))
            outs.update(newest_snapshot_key=newest.key, newest_snapshot_time=iso_utc(newest.taken_at),
                        stale_since=iso_utc(stale_since(newest.taken_at, interval)))
        return ReadResult(id_=id_, outs=outs)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        # Snapshots outlive the schedule: they are the backups. Retention is the bucket's lifecycle / dr.prune.
        return None


@dataclass
class EtcdSnapshotScheduleArgs:
    bucket: pulumi.Input[str]
    interval_seconds: pulumi.Input[int]
    prefix: pulumi.Input[str] = outputs.DEFAULT_SNAPSHOT_PREFIX
    region: pulumi.Input[str] | None = None
    cluster: pulumi.Input[str] | None = None
    function_name: pulumi.Input[str] | None = None  # invoke the Lambda (deployments)
    node: pulumi.Input[str] | None = None  # or run in-process against a reachable apid (tests)
    port: pulumi.Input[int] | None = None
    credential_key: pulumi.Input[str] | None = None  # the credential object in the bucket (in-process runs)
    credential_not_after: pulumi.Input[str] | None = None  # the deployed certificate's end (ISO 8601 UTC)
    log_group: pulumi.Input[str] | None = None  # where the Lambda logs, named in failure messages
    # The shared-config profile the program's AWS provider uses (`pulumi config set aws:profile`); None: read from the
    # stack's config. The clients this provider makes use it, so preview and up talk to the stack's account, not
    # whatever AWS_PROFILE happens to say in the deployer's shell. Static keys in the stack config are not passed.
    profile: pulumi.Input[str] | None = None


class EtcdSnapshotSchedule(pulumi.dynamic.Resource):
    """Proves the snapshot pipeline at deploy time and flags stale backups at every preview."""

    backups: pulumi.Output[str]
    newest_snapshot_key: pulumi.Output[str]
    newest_snapshot_time: pulumi.Output[str]
    stale_since: pulumi.Output[str]
    proof_snapshot_key: pulumi.Output[str]

    def __init__(self, name: str, args: EtcdSnapshotScheduleArgs, opts: pulumi.ResourceOptions | None = None):
        props: dict[str, Any] = {
            "bucket": args.bucket,
            "prefix": args.prefix,
            "region": args.region,
            "cluster": args.cluster,
            "interval_seconds": args.interval_seconds,
            "function_name": args.function_name,
            "node": args.node,
            "port": args.port,
            "credential_key": args.credential_key,
            "credential_not_after": args.credential_not_after,
            "log_group": args.log_group,
            "profile": args.profile if args.profile is not None else pulumi.Config("aws").get("profile"),
            "backups": None,
            **{k: None for k in OUTPUT_KEYS},
        }
        super().__init__(EtcdSnapshotScheduleProvider(), name, props, opts)
