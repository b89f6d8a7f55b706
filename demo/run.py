"""The demo: a sandbox cluster is backed up to S3, broken, restored with the real commands, and checked key by key.

    python -m demo                       # what `make demo` runs
    python -m demo --dir /tmp/d --keep   # keep the folder (snapshots, logs) afterwards
    python -m demo --report report.json  # also write the figures as JSON

The application's objects are stored as kube-apiserver stores them (sandbox.seed.encode: protobuf, Secrets
encrypted with the sandbox cluster's secretbox key), so after the check one Secret is deleted again and got back
with ``talos-dr extract``, its data compared with what the demo created.

Every DR step runs as the command a user would type (shown as ``$ talos-dr ...``), in a subprocess with the
sandbox's environment, in a folder of its own: your ``.talos/``, stack and AWS account are never used. The sandbox
is taken down at the end whatever happens (failure, Ctrl-C). Exit 0 only when every backed-up key came back with its
exact value and nothing else remains.

``--fault`` makes the demo fail on purpose, to show (and test) what a failure looks like:
``corrupt-backup`` damages the S3 object after the disaster (the restore must refuse it);
``bootstrap-fails`` makes the node's bootstrap fail after the reset (the restore stops, half done).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from dr.adapters.etcdlocal import iter_kvs
from dr.commands.verify import resource_type
from dr.core import spelling
from dr.core.errors import ExitCode
from sandbox import seed

REPO = Path(__file__).resolve().parent.parent
FAULTS = ("corrupt-backup", "bootstrap-fails")
PHASES = ("setup", "cluster", "backup", "disaster", "restore", "check", "teardown")
# The application the demo adds to the sandbox's seeded cluster, so there is something worth losing.
APP_NAMESPACE = "shop"
EXTRACTED_SECRET = "db-password"  # deleted again after the restore, and got back with `talos-dr extract`
CORRUPT_NAMESPACE = "demo"  # seeded by the sandbox; the disaster overwrites its objects with garbage
INTRUDER_KEYS = {
    "/registry/namespaces/intruder": b'{"kind":"Namespace","metadata":{"name":"intruder"}}',
    "/registry/pods/intruder/cryptominer": b'{"kind":"Pod","metadata":{"name":"cryptominer"}}',
    "/registry/configmaps/default/ransom-note": b'{"data":{"note":"pay up"}}',
}
# Environment the demo's commands must not inherit: they would point them at a real cluster or bucket.
SCRUBBED_ENV = ("DR_BUCKET", "DR_NODE", "DR_STACK", "DR_TALOS_DIR", "AWS_PROFILE", "AWS_SESSION_TOKEN",
                "AWS_SECURITY_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "KUBECONFIG")

KV = dict[str, bytes]


def app_manifests() -> dict[str, dict]:
    """The demo application's objects as Kubernetes JSON, by etcd key (deterministic)."""
    ns = APP_NAMESPACE
    created = "2026-01-01T00:00:00Z"

    def meta(name: str, namespaced: bool = True) -> dict:
        h = hashlib.sha256(f"{ns}/{name}".encode()).hexdigest()
        m = {"name": name, "uid": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}", "creationTimestamp": created}
        return {**m, "namespace": ns} if namespaced else m

    out: dict[str, dict] = {f"/registry/namespaces/{ns}": {"apiVersion": "v1", "kind": "Namespace",
                                                          "metadata": meta(ns, namespaced=False)}}
    for name in ("storefront", "cart", "checkout", "catalog"):
        out[f"/registry/deployments/{ns}/{name}"] = {"apiVersion": "apps/v1", "kind": "Deployment",
                                                     "metadata": meta(name), "spec": {"replicas": 3}}
        out[f"/registry/services/specs/{ns}/{name}"] = {"apiVersion": "v1", "kind": "Service", "metadata": meta(name)}
        out[f"/registry/configmaps/{ns}/{name}-config"] = {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(f"{name}-config"),
            "data": {"LOG_LEVEL": "info", "SERVICE": name}}
    for name in ("db-password", "payment-api-key"):
        value = base64.b64encode(hashlib.sha256(name.encode()).hexdigest().encode()).decode()
        out[f"/registry/secrets/{ns}/{name}"] = {"apiVersion": "v1", "kind": "Secret", "metadata": meta(name),
                                                 "type": "Opaque", "data": {"value": value}}
    return dict(sorted(out.items()))


def app_objects(secretbox_key_text: bytes | str = b"sandbox") -> KV:
    """The demo application's keys and values, stored as kube-apiserver stores them (sandbox.seed.encode: protobuf
    in the ``k8s\\0`` envelope, Secrets sealed with secretbox under ``key2``); ``secretbox_key_text`` is the
    cluster's base64 ``secretboxencryptionsecret``."""
    box_key = seed.secretbox_key(secretbox_key_text)
    return {k: seed.encode(obj, k, box_key) for k, obj in app_manifests().items()}


def in_namespace(key: str, ns: str) -> bool:
    """Whether ``key`` is a namespaced object in ``ns`` or the namespace itself."""
    if key == f"/registry/namespaces/{ns}":
        return True
    parts = key.split("/")
    # /registry/<type>/<ns>/<name> or /registry/services/specs/<ns>/<name>
    return key.startswith("/registry/") and len(parts) >= 5 and (
        parts[3] == ns or (parts[2] == "services" and len(parts) >= 6 and parts[4] == ns))


@dataclass
class Disaster:
    deleted: list[str] = field(default_factory=list)
    corrupted: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)


def plan_disaster(keys: list[str], delete_ns: str = APP_NAMESPACE, corrupt_ns: str = CORRUPT_NAMESPACE) -> Disaster:
    """Which keys the disaster deletes (one namespace, all of it), overwrites (another) and adds (intruders)."""
    return Disaster(
        deleted=sorted(k for k in keys if in_namespace(k, delete_ns)),
        corrupted=sorted(k for k in keys if in_namespace(k, corrupt_ns)),
        added=sorted(k for k in INTRUDER_KEYS if k not in keys),
    )


@dataclass
class Check:
    compared: int = 0  # keys in the backup
    identical: int = 0
    missing: list[str] = field(default_factory=list)  # in the backup, not in etcd after the restore
    wrong: list[str] = field(default_factory=list)  # in both, with a different value
    extra: list[str] = field(default_factory=list)  # in etcd after the restore, not in the backup

    @property
    def ok(self) -> bool:
        return not (self.missing or self.wrong or self.extra) and self.identical == self.compared


def compare(expected: KV, actual: KV) -> Check:
    """Key by key, value by value: is ``actual`` exactly ``expected``?"""
    c = Check(compared=len(expected))
    for k, v in expected.items():
        if k not in actual:
            c.missing.append(k)
        elif actual[k] != v:
            c.wrong.append(k)
        else:
            c.identical += 1
    c.extra = sorted(k for k in actual if k not in expected)
    return c


def counts_by_type(keys) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in keys:
        t = resource_type(k.encode() if isinstance(k, str) else k)
        out[t] = out.get(t, 0) + 1
    return dict(sorted(out.items()))


def read_all(endpoint: str) -> KV:
    """Every key and value the etcd at ``endpoint`` holds now."""
    return {kv.key.decode("utf-8", "replace"): kv.value or b"" for kv in iter_kvs(endpoint, keys_only=False)}


class StepFailed(Exception):
    def __init__(self, step: str, code: int, message: str):
        super().__init__(message)
        self.step, self.code, self.message = step, code, message


@dataclass
class Report:
    ok: bool = False
    exit_code: int = 1
    failed_step: str | None = None
    error: str | None = None
    dir: str = ""
    fault: str | None = None
    cluster: dict[str, Any] = field(default_factory=dict)
    backup: dict[str, Any] = field(default_factory=dict)
    disaster: dict[str, Any] = field(default_factory=dict)
    restore: dict[str, Any] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)
    extract: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    sandbox_down: bool = False
    total_seconds: float = 0.0


class Demo:
    def __init__(self, base: Path, out: TextIO, fault: str | None):
        self.base = base
        self.sandbox_dir = base / "sandbox"
        self.out = out
        self.fault = fault
        self.report = Report(dir=str(base), fault=fault)
        self.sb = None  # sandbox.api.Sandbox once up
        self.current = "setup"
        self.muted = False

    def s3(self):
        """An S3 client for the sandbox's S3 server (the demo process itself does not source the sandbox's env)."""
        import boto3
        from botocore.config import Config

        env = self.sb.env
        return boto3.client("s3", endpoint_url=self.sb.s3_endpoint, region_name=self.sb.region,
                            aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                            config=Config(s3={"addressing_style": "path"}))

    # --- output and commands -------------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        if self.muted:
            return
        try:
            print(text, file=self.out, flush=True)
        except OSError:
            # The reader went away (`python -m demo | head`): carry on silently, the sandbox must still come down.
            self.muted = True
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.out.fileno())
            except (OSError, ValueError):
                pass

    @contextmanager
    def phase(self, key: str, title: str) -> Iterator[None]:
        self.current = key
        n = PHASES.index(key) + 1
        self.say(f"\n== {n}/{len(PHASES)}  {title} " + "=" * max(3, 70 - len(title)))
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.report.phases[key] = round(time.monotonic() - t0, 3)

    def env(self) -> dict[str, str]:
        env = dict(self.sb.env) if self.sb is not None else dict(os.environ)
        for k in SCRUBBED_ENV:
            env.pop(k, None)
        env["DR_TALOS_DIR"] = str(self.base / ".talos")
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def run(self, step: str, *args: str, on_line: Callable[[str], None] | None = None) -> int:
        """Run ``talos-dr <command> ...`` or ``python -m sandbox ...`` as a user would, showing the command and its
        output; raise on failure. ``talos-dr`` runs as ``python -m dr.main`` with this interpreter (same code).
        ``on_line`` sees each output line as it comes, while the command keeps running."""
        shown = shlex.join(args) if args[0] == spelling.PROG else f"python -m {shlex.join(args)}"
        argv = ["dr.main", *args[1:]] if args[0] == spelling.PROG else list(args)
        self.say(f"$ {shown}")
        proc = subprocess.Popen([sys.executable, "-m", *argv], cwd=self.base, env=self.env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        last = ""
        try:
            for line in proc.stdout:
                line = line.rstrip("\n")
                if line.strip():
                    last = line.strip()
                self.say(f"    {line}")
                if on_line is not None:
                    on_line(line)
            code = proc.wait()
        except BaseException:
            # Stopped (Ctrl-C reaches the child too; SIGTERM only us): stop the command the way Ctrl-C would, so
            # it cleans up, before the sandbox is taken down under it.
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            raise
        if code != 0:
            raise StepFailed(step, code, f"`{shown}` failed with exit code {code}: {last}")
        return code

    def table(self, rows: dict[str, Any], header: tuple[str, ...]) -> None:
        self.say("    " + "".join(f"{h:<40}" if i == 0 else f"{h:>12}" for i, h in enumerate(header)))
        for name, vals in rows.items():
            vals = vals if isinstance(vals, tuple) else (vals,)
            self.say("    " + f"{name:<40}" + "".join(f"{v:>12}" for v in vals))

    # --- phases --------------------------------------------------------------------------------------------

    def setup(self) -> None:
        with self.phase("setup", "Start a sandbox cluster"):
            self.say(f"The sandbox is a real etcd behind a simulated Talos node, plus a local S3 server, all in "
                     f"{self.base}.\nNothing here touches AWS, a real cluster, or your own .talos/ folder.")
            self.run("setup", "sandbox", "up", "--dir", str(self.sandbox_dir))
            from sandbox.api import Sandbox

            self.sb = Sandbox.load(self.sandbox_dir)
            self.say(f"$ . {self.sb.env_file}    # the commands below run with this environment, in {self.base}")
            # Stored as the cluster's kube-apiserver would store them: Secrets encrypted with this cluster's key.
            from sandbox.pki import ClusterSecrets

            box = ClusterSecrets.load(self.sb.paths.secrets).bundle["secrets"]["secretboxencryptionsecret"]
            app = app_objects(box)
            for k, v in app.items():
                self.sb.put(k, v)
            self.say(f"added a small application: namespace {APP_NAMESPACE!r} with {len(app) - 1} objects "
                     "(deployments, services, configmaps, secrets)")

    def show_cluster(self) -> KV:
        with self.phase("cluster", "What the cluster holds"):
            state = read_all(self.sb.etcd_endpoint)
            counts = counts_by_type(state)
            self.say(f"etcd at {self.sb.etcd_endpoint} holds {len(state)} keys; Kubernetes objects per type:")
            self.table(counts, ("resource type", "objects"))
            self.report.cluster = {"keys": len(state), "resources": counts}
            return state

    def backup(self, state: KV) -> KV:
        with self.phase("backup", "Back up to S3, and prove the backup restores"):
            self.run("backup", spelling.PROG, "backup", "--save-to-s3")
            after = read_all(self.sb.etcd_endpoint)
            if after != state:
                raise StepFailed("backup", int(ExitCode.VERIFY_MISMATCH),
                                 "the cluster changed while the demo was backing it up; run the demo again")
            self.run("verify", spelling.PROG, "verify", "latest")
            self.run("list", spelling.PROG, "list")
            from dr.adapters import s3
            from dr.adapters.store import S3Store

            client = self.s3()
            [latest, *_] = S3Store(client, self.sb.bucket, "snapshots/").list()
            assert latest.key is not None
            tags = s3.head_snapshot(client, self.sb.bucket, latest.key).tags
            self.report.backup = {"object": latest.location, "size": latest.size, "keys": len(state),
                                  "verified_keys": int(tags.get(s3.TAG_VERIFIED_KEYS, -1)),
                                  "verified_revision": int(tags.get(s3.TAG_VERIFIED_REVISION, -1))}
            if self.report.backup["verified_keys"] != len(state):
                raise StepFailed("verify", int(ExitCode.VERIFY_MISMATCH),
                                 f"`{spelling.command('verify')}` counted {tags.get(s3.TAG_VERIFIED_KEYS)} keys in "
                                 f"{latest.location}, "
                                 f"but the cluster held {len(state)}")
            self.say(f"the backup {latest.location} holds the cluster's {len(state)} keys "
                     f"({spelling.command('verify')} recorded verified-keys={tags.get(s3.TAG_VERIFIED_KEYS)} "
                     "on the object)")
            return after

    def disaster(self, state: KV) -> Disaster:
        with self.phase("disaster", "Disaster strikes (after the backup)"):
            d = plan_disaster(sorted(state))
            for k in d.deleted:
                r = self.sb.etcdctl("del", k)
                if r.returncode != 0:
                    raise StepFailed("disaster", int(ExitCode.ERROR), f"could not delete {k}: {r.stderr.strip()}")
            for i, k in enumerate(d.corrupted):
                self.sb.put(k, b"\x00GARBAGE\xff" + hashlib.sha256(f"{i}{k}".encode()).digest())
            for k in d.added:
                self.sb.put(k, INTRUDER_KEYS[k])
            # The local copies go too (a lost laptop, a wiped CI runner): the restore must come from S3.
            lost_files = sorted((self.base / ".talos" / "snapshots").glob("etcd-snapshot-*.db"))
            for f in lost_files:
                f.unlink()
            now = read_all(self.sb.etcd_endpoint)
            harmed = compare(state, now)
            self.say(f"deleted every object in namespace {APP_NAMESPACE!r} ({len(d.deleted)} keys), overwrote "
                     f"every object in namespace {CORRUPT_NAMESPACE!r} with garbage ({len(d.corrupted)} keys), and "
                     f"added {len(d.added)} keys that must not survive:")
            rows = {}
            for t in sorted(set(counts_by_type(d.deleted)) | set(counts_by_type(d.corrupted))
                            | set(counts_by_type(d.added))):
                rows[t] = (counts_by_type(d.deleted).get(t, 0), counts_by_type(d.corrupted).get(t, 0),
                           counts_by_type(d.added).get(t, 0))
            self.table(rows, ("resource type", "deleted", "garbage", "added"))
            self.say(f"etcd now: {len(harmed.missing)} backed-up keys missing, {len(harmed.wrong)} wrong, "
                     f"{len(harmed.extra)} that should not be there")
            self.say(f"the local snapshot copies are lost too ({', '.join(f.name for f in lost_files) or 'none'}): "
                     "the restore has to come from S3")
            self.report.disaster = {
                "deleted": d.deleted, "corrupted": d.corrupted, "added": d.added,
                "deleted_count": len(d.deleted), "corrupted_count": len(d.corrupted), "added_count": len(d.added),
                "missing_after": len(harmed.missing), "wrong_after": len(harmed.wrong),
                "extra_after": len(harmed.extra), "local_copies_removed": [f.name for f in lost_files],
            }
            if self.fault == "corrupt-backup":
                self.corrupt_backup()
            elif self.fault == "bootstrap-fails":
                self.sb.set_faults(bootstrap_fails="etcd recovery failed (fault injected by the demo)")
                self.say("fault injected (--fault bootstrap-fails): the node's bootstrap will fail")
            return d

    def corrupt_backup(self) -> None:
        from dr.adapters.store import S3Store

        client = self.s3()
        [latest, *_] = S3Store(client, self.sb.bucket, "snapshots/").list()
        assert latest.key is not None
        body = bytearray(client.get_object(Bucket=self.sb.bucket, Key=latest.key)["Body"].read())
        body[len(body) // 2] ^= 0xFF
        client.put_object(Bucket=self.sb.bucket, Key=latest.key, Body=bytes(body))
        self.say(f"fault injected (--fault corrupt-backup): one byte of {latest.location} flipped")

    def restore(self) -> None:
        with self.phase("restore", "Restore the newest backup"):
            self.run("restore", spelling.PROG, "restore", "latest", "--yes")
            self.report.restore = {"snapshot": self.report.backup.get("object")}

    def check(self, expected: KV, d: Disaster) -> Check:
        with self.phase("check", "Is exactly the backed-up data back?"):
            now = read_all(self.sb.etcd_endpoint)
            c = compare(expected, now)
            back_deleted = sum(1 for k in d.deleted if now.get(k) == expected[k])
            back_corrupted = sum(1 for k in d.corrupted if now.get(k) == expected[k])
            gone_added = sum(1 for k in d.added if k not in now)
            self.say(f"compared all {c.compared} backed-up keys with what etcd holds now, value by value:")
            self.say(f"    deleted in the disaster:  {back_deleted:>4} of {len(d.deleted):<4} back")
            self.say(f"    overwritten with garbage: {back_corrupted:>4} of {len(d.corrupted):<4} back to their "
                     "backed-up values")
            self.say(f"    added by the disaster:    {gone_added:>4} of {len(d.added):<4} gone")
            self.say(f"    every backed-up key:      {c.identical:>4} of {c.compared:<4} identical; "
                     f"{len(c.missing)} missing, {len(c.wrong)} wrong, {len(c.extra)} extra")
            for label, keys in (("missing", c.missing), ("wrong", c.wrong), ("extra", c.extra)):
                for k in keys[:10]:
                    self.say(f"      {label}: {k}")
            self.report.check = {**asdict(c), "ok": c.ok, "deleted_back": back_deleted,
                                 "corrupted_back": back_corrupted, "added_gone": gone_added}
            if not c.ok:
                raise StepFailed("check", int(ExitCode.VERIFY_MISMATCH),
                                 f"the restored cluster differs from the backup: {len(c.missing)} missing, "
                                 f"{len(c.wrong)} wrong, {len(c.extra)} extra keys")
            self.extract_one_secret()
            return c

    def extract_one_secret(self) -> None:
        """The small disaster: one Secret deleted after the backup, got back as YAML with `talos-dr extract`
        (decrypted with the cluster's key from the stack outputs) and compared with the Secret the demo created."""
        import yaml

        key = f"/registry/secrets/{APP_NAMESPACE}/{EXTRACTED_SECRET}"
        want = app_manifests()[key]
        r = self.sb.etcdctl("del", key)
        if r.returncode != 0:
            raise StepFailed("extract", int(ExitCode.ERROR), f"could not delete {key}: {r.stderr.strip()}")
        self.say(f"\nA smaller disaster needs no rollback: Secret {APP_NAMESPACE}/{EXTRACTED_SECRET} is deleted "
                 "again;\nget it back from the backup, decrypted, as YAML for `kubectl apply`:")
        out_dir = self.base / "restored"
        self.run("extract", spelling.PROG, "extract", "latest", "-n", APP_NAMESPACE, "--type", "secrets",
                 "--name", EXTRACTED_SECRET, "-o", str(out_dir))
        path = out_dir / APP_NAMESPACE / f"secret-{EXTRACTED_SECRET}.yaml"
        try:
            got = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise StepFailed("extract", int(ExitCode.VERIFY_MISMATCH), f"{path} was not written as YAML: {exc}") \
                from exc
        same = (isinstance(got, dict) and got.get("kind") == "Secret" and got.get("data") == want["data"]
                and got.get("type") == want["type"]
                and (got.get("metadata") or {}).get("name") == EXTRACTED_SECRET
                and (got.get("metadata") or {}).get("namespace") == APP_NAMESPACE)
        self.report.extract = {"secret": f"{APP_NAMESPACE}/{EXTRACTED_SECRET}", "file": str(path), "identical": same}
        if not same:
            raise StepFailed("extract", int(ExitCode.VERIFY_MISMATCH),
                             f"{path} does not hold the Secret the demo created (type and data differ)")
        self.say(f"{path.name} holds the Secret's type and data exactly as the demo created them "
                 f"(data keys: {', '.join(sorted(want['data']))}; values not shown)")

    def teardown(self) -> None:
        with self.phase("teardown", "Take the sandbox down"):
            try:
                self.run("teardown", "sandbox", "down", "--dir", str(self.sandbox_dir))
            except (StepFailed, OSError) as exc:
                self.say(f"`python -m sandbox down` failed ({exc}); stopping the sandbox directly")
            from sandbox.api import Sandbox, SandboxError

            try:
                sb = Sandbox.load(self.sandbox_dir)
                sb.down()
                self.report.sandbox_down = not sb.running()
            except SandboxError:
                self.report.sandbox_down = True  # `up` never got far enough to leave anything running

    def summary(self) -> None:
        r = self.report
        self.say("\n== Report " + "=" * 69)
        if r.cluster:
            self.say(f"cluster:   {r.cluster['keys']} keys, {len(r.cluster['resources'])} resource types")
        if r.backup:
            self.say(f"backup:    {r.backup['object']} ({r.backup['keys']} keys, verified by "
                     f"{spelling.command('verify')})")
        if r.disaster:
            self.say(f"disaster:  {r.disaster['deleted_count']} keys deleted, {r.disaster['corrupted_count']} "
                     f"overwritten with garbage, {r.disaster['added_count']} added")
        if r.check:
            c = r.check
            self.say(f"restored:  {c['deleted_back']}/{r.disaster['deleted_count']} deleted keys back, "
                     f"{c['corrupted_back']}/{r.disaster['corrupted_count']} overwritten keys repaired, "
                     f"{c['added_gone']}/{r.disaster['added_count']} added keys gone; "
                     f"{c['identical']}/{c['compared']} keys identical to the backup")
        if r.extract:
            self.say(f"extract:   Secret {r.extract['secret']} deleted after the restore, back with "
                     f"{spelling.command('extract')}: {'identical' if r.extract['identical'] else 'DIFFERENT'}")
        self.say("time per phase:")
        for k, v in r.phases.items():
            self.say(f"    {k:<10} {v:>7.1f}s")
        self.say(f"    {'total':<10} {r.total_seconds:>7.1f}s")
        self.say(f"sandbox:   {'taken down' if r.sandbox_down else 'STILL RUNNING: python -m sandbox down --dir ' + str(self.sandbox_dir)}")
        if r.ok:
            self.say("\nresult: PASS. Every backed-up key came back with its exact value, and nothing else.")
        else:
            self.say(f"\nresult: FAIL at step {r.failed_step!r}: {r.error}")
            if r.fault:
                self.say(f"(this failure was requested with --fault {r.fault})")


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    p = argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", help="work folder (default: a new temporary folder, removed afterwards unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (snapshots, logs, journal)")
    p.add_argument("--report", metavar="FILE", help="also write the report as JSON to FILE")
    p.add_argument("--fault", choices=FAULTS, default=os.environ.get("DEMO_FAULT") or None,
                   help="fail on purpose (env DEMO_FAULT): see above")
    args = p.parse_args(argv)
    if args.fault not in (None, *FAULTS):
        p.error(f"DEMO_FAULT={args.fault!r} is not one of {', '.join(FAULTS)}")

    base = Path(args.dir).resolve() if args.dir else Path(tempfile.mkdtemp(prefix="talos-dr-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    demo = Demo(base, out, args.fault)
    demo.say("talos-dr demo: back up a cluster to S3, break it, restore it, and prove nothing was lost.\n"
             "It runs the same commands you would (each shown as `$ talos-dr ...`, its output indented below):\n"
             "  1 start a local sandbox cluster   2 show what it holds    3 back it up to S3 and verify the backup\n"
             "  4 break it (delete, corrupt, add) 5 restore the backup    6 compare every key with the backup\n"
             "  7 take the sandbox down (always, also when something fails)\n"
             "(after step 6, one Secret is deleted again and got back from the backup with `talos-dr extract`)")
    def phases() -> None:
        demo.setup()
        state = demo.show_cluster()
        expected = demo.backup(state)
        d = demo.disaster(expected)
        demo.restore()
        demo.check(expected, d)

    kept = f"snapshots in {base / '.talos' / 'snapshots'}, logs in {demo.sandbox_dir / 'logs'}"
    return run_guarded(demo, phases, base=base, kept=kept, report=args.report, keep=args.keep,
                       temporary=not args.dir)


def run_guarded(demo: Any, phases: Callable[[], None], *, base: Path, kept: str, report: str | None, keep: bool,
                temporary: bool) -> int:
    """Run a demo's phases; whatever happens (a failed step, Ctrl-C, a bug), take the sandbox down, print the summary,
    write the JSON report, and keep the work folder when asked or when something failed. Returns the exit code.
    ``demo`` has ``report``, ``current``, ``teardown()``, ``summary()``, ``say()`` (Demo, demo.ha.HADemo)."""
    t0 = time.monotonic()
    r = demo.report
    try:
        phases()
        r.ok, r.exit_code = True, 0
    except StepFailed as exc:
        r.failed_step, r.error, r.exit_code = exc.step, exc.message, exc.code or 1
    except KeyboardInterrupt:
        r.failed_step, r.error, r.exit_code = demo.current, "interrupted (Ctrl-C)", int(ExitCode.INTERRUPTED)
    except Exception as exc:  # a bug in the demo or the sandbox: still take the sandbox down, then say so
        r.failed_step, r.error, r.exit_code = demo.current, f"{type(exc).__name__}: {exc}", int(ExitCode.ERROR)
    finally:
        try:
            demo.teardown()
        finally:
            r.total_seconds = round(time.monotonic() - t0, 3)
            if not r.sandbox_down and r.ok:
                r.ok, r.exit_code, r.failed_step = False, int(ExitCode.ERROR), "teardown"
                r.error = "the sandbox could not be taken down"
            demo.summary()
            if report:
                Path(report).write_text(json.dumps(asdict(r), indent=2, default=str) + "\n")
                demo.say(f"report written to {report}")
            if keep or not r.ok:
                demo.say(f"work folder kept: {base} ({kept})")
            elif temporary:
                shutil.rmtree(base, ignore_errors=True)
    return r.exit_code
