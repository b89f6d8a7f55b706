"""`python -m dr.restore <file | s3://bucket/key | latest>`: put a snapshot back into the node's etcd.

    python -m dr.restore latest                  # newest snapshot in the stack's bucket; asks you to type yes
    python -m dr.restore s3://bucket/key --yes   # no prompt (scripts, the demo)
    python -m dr.restore .talos/snapshots/etcd-snapshot-20260101T000000Z.db

Everything is checked before the point of no return (the reset): the snapshot's hash trailer, the talosconfig and
machine config, that the node answers, local disk space. Then: a safety snapshot of the current etcd, a reset that
wipes EPHEMERAL only (the docs' DR flow: STATE keeps the machine config), wait for the node, re-apply the machine
config if the node came back in maintenance, `bootstrap --recover-from`, wait for health, regenerate the kubeconfig.

Progress is recorded in ``.talos/restore-journal.json``. Running the same command again after Ctrl-C, a crash or a
timeout continues from where it stopped; the next step is chosen from the node's actual state, not from the journal
alone (see ``Restore.run``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from dr import cli, journal, naming, s3, source
from dr import outputs as keys
from dr.backup import LOCK_NAME, clean_partials, ensure_snapshots_dir, take_local_snapshot
from dr.errors import (
    ConfigError,
    CorruptSnapshot,
    DiskFull,
    DRError,
    ExitCode,
    NodeError,
    NodeUnreachable,
    NotConfirmed,
    RestoreConflict,
    SnapshotNotFound,
    Timeout,
)
from dr.lock import exclusive
from dr.settings import Resolver, add_common_flags
from dr.talosctl import NOT_READY, Talosctl

PROG = "dr.restore"
# Labels the reset wipes. Never empty: a reset without labels may wipe a cloud VM's whole disk (talos.md).
WIPE_EPHEMERAL = ("EPHEMERAL",)
WIPE_STATE_TOO = ("STATE", "EPHEMERAL")
SAFETY_MARGIN = 16 << 20

# What the node looks like, as far as a restore cares.
ETCD_RUNNING = "etcd running"  # configured, etcd has data and runs
ETCD_WAITING = "etcd waiting for bootstrap"  # configured, etcd's data directory is empty (after an EPHEMERAL wipe)
ETCD_STOPPED = "etcd not running"  # configured and running, but etcd neither runs nor waits
MAINTENANCE = "maintenance"  # no machine config: waits for apply-config --insecure
TRANSITIONING = "transitioning"  # resetting, rebooting, booting ...
UNREACHABLE = "unreachable"
REFUSED = "refused"  # answered, but refused us in a way that is not maintenance mode
SETTLED = (ETCD_RUNNING, ETCD_WAITING, ETCD_STOPPED, MAINTENANCE)
_ETCD_WAITING_STATES = ("Preparing", "Pre", "Waiting")
_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ms|s|m|h)")


@dataclass(frozen=True)
class NodeState:
    kind: str
    stage: str  # the node's own word (running, maintenance, rebooting ...) or "unreachable"
    error: DRError | None = None

    def describe(self) -> str:
        if self.kind in (UNREACHABLE, MAINTENANCE):
            return self.kind
        if self.kind == REFUSED:
            return f"refusing our talosconfig ({self.error.message if self.error else 'unknown error'})"
        return f"{self.stage}, {self.kind}" if self.kind in SETTLED else self.stage


def probe(t: Talosctl) -> NodeState:
    """Ask the node where it is. Never raises for the node's own state; a missing talosctl still raises."""
    try:
        stage = t.stage()
    except NodeUnreachable as exc:
        return NodeState(UNREACHABLE, "unreachable", exc)
    except NodeError as exc:
        # A node in maintenance mode does not know our CA: the authenticated call fails in the TLS handshake,
        # an --insecure one answers (talos.md).
        try:
            stage = t.stage(insecure=True)
        except NodeUnreachable as exc2:
            return NodeState(UNREACHABLE, "unreachable", exc2)
        except NodeError:
            return NodeState(REFUSED, "unknown", exc)
        return NodeState(MAINTENANCE if stage == "maintenance" else TRANSITIONING, stage or "unknown")
    except Timeout as exc:
        return NodeState(UNREACHABLE, "unreachable", exc)
    if stage != "running":
        return NodeState(TRANSITIONING, stage or "unknown")
    try:
        etcd = t.service_state("etcd")
    except NodeUnreachable as exc:
        return NodeState(UNREACHABLE, "unreachable", exc)
    except (NodeError, Timeout) as exc:
        return NodeState(TRANSITIONING, stage, exc)
    if etcd == "Running":
        return NodeState(ETCD_RUNNING, stage)
    if etcd in _ETCD_WAITING_STATES:
        return NodeState(ETCD_WAITING, stage)
    if etcd == "Starting":
        return NodeState(TRANSITIONING, f"{stage} (etcd starting)")
    return NodeState(ETCD_STOPPED, f"{stage} (etcd {etcd})")


@dataclass(frozen=True)
class SnapshotStatus:
    revision: int | None
    total_keys: int | None
    tool: str | None  # which local tool read it, or None


def snapshot_status(path: Path) -> SnapshotStatus:
    """Revision and key count from ``etcdutl``/``etcdctl snapshot status -w json`` when one is installed locally.

    Restore does not require etcd on this machine (the trailer check is enough to proceed); when a tool is there
    and says the file is not a readable bbolt database, that is a refusal."""
    for tool, args in (("etcdutl", ["snapshot", "status"]), ("etcdctl", ["snapshot", "status"])):
        exe = shutil.which(tool)
        if not exe:
            continue
        try:
            proc = subprocess.run([exe, *args, str(path), "-w", "json"], capture_output=True, text=True, timeout=120,
                                  env={**os.environ, "ETCDCTL_API": "3"})
        except (OSError, subprocess.TimeoutExpired):
            continue
        if proc.returncode != 0:
            text = (proc.stderr or proc.stdout).strip()
            if tool == "etcdctl" and ("unknown command" in text or "deprecated" in text and "removed" in text):
                continue  # etcd 3.6 removed it from etcdctl
            last = text.splitlines()[-1] if text else f"exit {proc.returncode}"
            raise CorruptSnapshot(f"snapshot {path} passed its trailer check but `{tool} snapshot status` cannot "
                                  f"read it: {last}", "use another snapshot")
        try:
            doc = json.loads(proc.stdout)
            return SnapshotStatus(int(doc["revision"]), int(doc["totalKey"]), tool)
        except (ValueError, KeyError, TypeError):
            continue
    return SnapshotStatus(None, None, None)


def parse_duration(text: str) -> float:
    """Seconds from ``900``, ``90s``, ``15m``, ``1h30m``."""
    s = text.strip()
    try:
        v = float(s)
    except ValueError:
        pos, total = 0, 0.0
        for m in _DURATION.finditer(s):
            if m.start() != pos:
                break
            total += float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]
            pos = m.end()
        if pos != len(s) or not s:
            import argparse

            raise argparse.ArgumentTypeError(f"invalid duration {text!r} (use e.g. 90s, 15m, 1h)") from None
        v = total
    if v <= 0:
        import argparse

        raise argparse.ArgumentTypeError(f"duration must be more than 0, not {text!r}")
    return v


def human_duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def ensure_talosconfig(r: Resolver, out: TextIO) -> None:
    """Write ``.talos/talosconfig`` (0600) from the stack output when it is missing, as `pulumi up` would."""
    path = r.talosconfig_path
    if path.exists() or path.is_symlink() or path != r.talos_dir / "talosconfig":
        return
    text = r.outputs.get(keys.TALOSCONFIG)
    if not text:
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    part = path.with_name(path.name + ".part")
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(str(text))
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    print(f"wrote {path} from stack output {keys.TALOSCONFIG} (it was missing)", file=out)


class Restore:
    """One run of the restore command. ``run`` is the whole flow; each step says what it does as it does it."""

    def __init__(self, args, r: Resolver, t: Talosctl, controlplane: str, out: TextIO, err: TextIO,
                 stdin: TextIO, clock: Callable[[], datetime]):
        self.args, self.r, self.t, self.controlplane = args, r, t, controlplane
        self.out, self.err, self.stdin, self.clock = out, err, stdin, clock
        self.jpath = journal.path_for(r.talos_dir)
        self.j: journal.Journal | None = None
        self.abandoned_past_reset = False
        self.start = time.monotonic()

    # --- helpers ------------------------------------------------------------------------------------------

    def say(self, msg: str) -> None:
        print(msg, file=self.out, flush=True)

    def resume_cmd(self) -> str:
        spec = self.j.spec if self.j else self.args.snapshot
        return f"python -m dr.restore {shlex.quote(spec)}"

    def mark(self, step: str) -> None:
        assert self.j is not None
        journal.mark(self.jpath, self.j, step)

    def unmark(self, step: str) -> None:
        """The node refused the step outright: record that it did not happen, so a re-run does it again."""
        assert self.j is not None
        if self.j.steps.pop(step, None) is not None:
            journal.save(self.jpath, self.j)

    def wait_for(self, want: tuple[str, ...], timeout: float, why: str, *, fail: bool = True) -> NodeState:
        """Poll the node until its state is one of ``want``. Progress on every change and every 30 s.

        On timeout: raise (``fail``), or return the last state seen."""
        deadline = time.monotonic() + timeout
        begin = time.monotonic()
        last_shown, last_line = None, begin
        self.say(f"waiting for node {self.t.node} {why} (up to {human_duration(timeout)}) ...")
        while True:
            st = probe(self.t)
            if st.kind in want:
                self.say(f"  node {self.t.node} is {st.describe()} ({human_duration(time.monotonic() - begin)})")
                return st
            now = time.monotonic()
            shown = st.describe()
            if shown != last_shown or now - last_line >= 30:
                self.say(f"  {human_duration(now - begin):>6}  node is {shown}")
                last_shown, last_line = shown, now
            if now >= deadline:
                if not fail:
                    return st
                raise self.timeout_error(st, timeout, why)
            time.sleep(min(self.args.poll_interval, max(deadline - now, 0.05)))

    def timeout_error(self, st: NodeState, timeout: float, why: str) -> DRError:
        node = self.t.node
        if st.kind == ETCD_RUNNING and self.j and self.j.done(journal.RESET):
            return RestoreConflict(
                f"node {node} runs etcd with data although this restore reset it at {self.j.steps[journal.RESET]} "
                "and never bootstrapped it: the reset did not happen, or someone bootstrapped the node since",
                f"check with `talosctl -n {node} service etcd`; to restore over it, run `{self.resume_cmd()} "
                "--abandon-previous` (it resets the node again)")
        return Timeout(
            f"node {node} did not come back {why} within {human_duration(timeout)} (last seen: {st.describe()})",
            f"check the instance is running (EC2 console: state, system log); when `talosctl -n {node} version "
            f"--insecure` or `talosctl -n {node} service etcd` answers, run `{self.resume_cmd()}` again: it continues "
            f"from {self.jpath} (or give it longer with --reboot-timeout)")

    # --- the flow -----------------------------------------------------------------------------------------

    def run(self) -> int:
        r, t, args = self.r, self.t, self.args
        fetched = self.fetch()
        status = snapshot_status(fetched.path)
        self.say(f"snapshot {fetched.path}: {cli.human_size(fetched.digest.size)}, SHA-256 trailer verified"
                 + (f", revision {status.revision}, {status.total_keys} database entries ({status.tool} snapshot status)"
                    if status.tool else " (revision unknown: etcdctl is not installed here)"))

        self.j = self.previous_journal(fetched)
        resuming_past_reset = bool(self.j and self.j.past_point_of_no_return)
        if self.j is None and not self.abandoned_past_reset:
            st = probe(t)
            self.preflight_node(st)
        elif self.j is None:  # the abandoned restore reset the node: it may still be rebooting
            st = probe(t)
            if st.kind not in SETTLED:
                st = self.wait_for(SETTLED, args.reboot_timeout, "to settle after the abandoned restore's reset")
        else:
            self.say(f"continuing the restore of {self.j.snapshot_origin} started at {self.j.started_at} "
                     f"(last step done: {self.j.last_step}; journal {self.jpath})")
            st = probe(t)
            if st.kind not in SETTLED:
                st = self.wait_for(SETTLED, args.reboot_timeout, "to settle")

        bootstrapped_before = bool(self.j and self.j.done(journal.BOOTSTRAP_STARTED))
        if (st.kind == ETCD_RUNNING and self.j and self.j.done(journal.RESET) and not bootstrapped_before):
            # Our reset was accepted but has not begun yet (seconds), or it never reached the node (the run died
            # between recording it and sending it): do not wait a whole reboot timeout to tell the two apart.
            others = (ETCD_WAITING, ETCD_STOPPED, MAINTENANCE, TRANSITIONING, UNREACHABLE, REFUSED)
            st = self.wait_for(others, min(60.0, args.reboot_timeout), "to begin its reset", fail=False)
            if st.kind == ETCD_RUNNING:
                # Nothing was destroyed: start again from the confirmation, with a fresh safety snapshot of what
                # etcd holds now (which protects data written since, if someone bootstrapped the node meanwhile).
                self.say(f"node {t.node} runs etcd with data although this restore recorded a reset at "
                         f"{self.j.steps[journal.RESET]} (the reset never reached the node, or someone bootstrapped "
                         "it since); starting again from the confirmation, with a safety snapshot of what it holds now")
                for step in (journal.RESET, journal.SAFETY_SNAPSHOT, journal.CONFIRMED):
                    self.j.steps.pop(step, None)
                journal.save(self.jpath, self.j)
                resuming_past_reset = False
            else:
                st = self.wait_for((ETCD_WAITING, MAINTENANCE), args.reboot_timeout, "after the reset")
        needs_reset = st.kind in (ETCD_RUNNING, ETCD_STOPPED) and not bootstrapped_before
        safety = needs_reset and st.kind == ETCD_RUNNING and not args.no_safety_snapshot
        if safety:
            self.check_disk(fetched.digest.size)

        if not resuming_past_reset:
            self.confirm(fetched, status, st, needs_reset, safety)
        else:
            self.say("the node was already reset by this restore: no new confirmation needed")
        if self.j is None:
            self.j = journal.Journal(spec=args.snapshot, snapshot_path=str(fetched.path),
                                     snapshot_sha256=fetched.digest.content_sha256, snapshot_origin=fetched.origin,
                                     node=t.node, cluster=r.cluster, wipe_state=args.wipe_state)
        if not resuming_past_reset:
            self.mark(journal.CONFIRMED)

        if needs_reset:
            if safety:
                self.safety_snapshot()
            elif st.kind == ETCD_STOPPED:
                self.say(f"no safety snapshot: etcd on node {t.node} is not running ({st.stage})")
            else:
                self.say("no safety snapshot (--no-safety-snapshot)")
            self.reset()
            want = (MAINTENANCE,) if self.j.wipe_state else (ETCD_WAITING, MAINTENANCE)
            st = self.wait_for(want, args.reboot_timeout, "after the reset")
            self.mark(journal.NODE_BACK)
        elif st.kind in (MAINTENANCE, ETCD_WAITING) and not resuming_past_reset:
            self.say(f"node {t.node} is {st.describe()}: its etcd is empty, so no reset is needed")

        if st.kind == MAINTENANCE:
            self.apply_config()
            st = self.wait_for((ETCD_WAITING,), args.reboot_timeout, "with its machine config")
        if st.kind == ETCD_WAITING:
            self.bootstrap(fetched.path)
        elif st.kind == ETCD_RUNNING and bootstrapped_before:
            self.say(f"etcd on node {t.node} already runs: the earlier run's bootstrap --recover-from finished")
            if not self.j.done(journal.BOOTSTRAPPED):
                self.mark(journal.BOOTSTRAPPED)
        else:  # etcd stopped after an earlier bootstrap attempt of this restore
            raise NodeError(f"node {t.node} is {st.describe()} after an earlier bootstrap attempt; cannot bootstrap it",
                            f"check `talosctl -n {t.node} service etcd` and `talosctl -n {t.node} logs etcd`, then run "
                            f"`{self.resume_cmd()} --abandon-previous` to reset it and restore again")

        self.health()
        kubeconfig = self.kubeconfig()
        self.finish(fetched, status, kubeconfig)
        return 0

    def fetch(self) -> source.Fetched:
        spec = self.args.snapshot
        try:
            return source.fetch(spec, self.r, self.r.snapshots_dir, self.err)
        except SnapshotNotFound:
            if not spec.startswith("s3://"):
                raise
            # A HEAD of a key in a missing bucket is a bare 404, like a missing key: ask the bucket itself.
            bucket, _key = s3.parse_s3_uri(spec)
            try:
                self.r.s3_client().list_objects_v2(Bucket=bucket, MaxKeys=1)
            except Exception as exc:  # noqa: BLE001 - translated to the matching DRError
                raise s3.translate(exc, "listing", bucket) from exc
            raise

    def previous_journal(self, fetched: source.Fetched) -> journal.Journal | None:
        try:
            j = journal.load(self.jpath)
        except ConfigError:
            if not self.args.abandon_previous:
                raise
            self.say(f"removing the unreadable restore journal {self.jpath} (--abandon-previous)")
            journal.remove(self.jpath)
            self.abandoned_past_reset = True  # unknown: assume the node may be mid-reset and wait for it
            return None
        if j is None:
            return None
        same = j.snapshot_sha256 == fetched.digest.content_sha256 and j.node == self.t.node
        if self.args.abandon_previous:
            self.say(f"abandoning the half-done restore of {j.snapshot_origin} to node {j.node} (started "
                     f"{j.started_at}, last step {j.last_step}); starting over from the node's current state")
            journal.remove(self.jpath)
            self.abandoned_past_reset = j.past_point_of_no_return
            return None
        if not same:
            raise RestoreConflict(
                f"a different restore is half done: {j.snapshot_origin} to node {j.node}, started {j.started_at}, "
                f"last step {j.last_step} (journal {self.jpath})",
                f"finish it with `python -m dr.restore {shlex.quote(j.spec)}`, or pass --abandon-previous to restore "
                f"{fetched.origin} instead")
        return j

    def preflight_node(self, st: NodeState) -> None:
        node = self.t.node
        if st.kind == UNREACHABLE:
            raise NodeUnreachable(
                f"node {node} does not answer on port 50000 ({st.error.message if st.error else 'no answer'}); "
                "nothing was changed",
                "check the instance is running and the security group admits your IP; if the node and its disk are "
                "gone, `pulumi up` rebuilds it first (docs/RUNBOOK.md)")
        if st.kind == REFUSED:
            assert st.error is not None
            raise type(st.error)(f"{st.error.message}; nothing was changed", st.error.hint)
        if st.kind == TRANSITIONING:
            raise NodeError(f"node {node} is {st.stage}; nothing was changed",
                            f"wait until it is running or in maintenance (`talosctl -n {node} get machinestatus`), "
                            "then run the restore again")

    def check_disk(self, size: int) -> None:
        need = 2 * size + SAFETY_MARGIN
        free = shutil.disk_usage(self.r.snapshots_dir).free
        if free < need:
            raise DiskFull(f"only {cli.human_size(free)} free in {self.r.snapshots_dir}; the safety snapshot of the "
                           f"current etcd needs about {cli.human_size(need)}; nothing was changed",
                           "free some space (or choose another --talos-dir), or pass --no-safety-snapshot")

    def confirm(self, fetched: source.Fetched, status: SnapshotStatus, st: NodeState, needs_reset: bool,
                safety: bool) -> None:
        taken = (naming.parse_snapshot_name(fetched.path.name)
                 or (fetched.info.last_modified if fetched.info else None)
                 or datetime.fromtimestamp(fetched.path.stat().st_mtime, UTC))
        age = cli.human_age((self.clock() - taken).total_seconds())
        rev = (f"revision {status.revision}, {status.total_keys} database entries" if status.tool
               else "revision and key count unknown (etcdctl is not installed here)")
        labels = WIPE_STATE_TOO if self.args.wipe_state else WIPE_EPHEMERAL
        lines = [
            "",
            f"About to restore etcd of cluster {self.r.cluster} on node {self.t.node} (now {st.describe()}) from:",
            f"  snapshot  {fetched.path.name}  ({fetched.origin})",
            f"  taken     {taken.strftime('%Y-%m-%d %H:%M:%S UTC')} ({age} ago)",
            f"  content   {rev}; {cli.human_size(fetched.digest.size)}, SHA-256 trailer verified",
        ]
        if needs_reset:
            lines += [
                "Everything written to the cluster after that snapshot was taken is LOST: Kubernetes objects and",
                "Secrets created, changed or deleted since then go back to the snapshot's state.",
                f"The node is reset (wiping {' and '.join(labels)}) and reboots; the cluster is down until the "
                "restore finishes.",
                ("A safety snapshot of the current etcd is saved in " + str(self.r.snapshots_dir) + " first."
                 if safety else "No safety snapshot of the current etcd will be taken."),
            ]
        else:
            lines.append("The node's etcd is empty (nothing on it is lost); it is bootstrapped from the snapshot.")
        self.say("\n".join(lines))
        if self.args.yes:
            self.say("confirmed by --yes")
            return
        isatty = getattr(self.stdin, "isatty", lambda: False)
        if not isatty():
            raise NotConfirmed("restore not confirmed: there is no terminal to ask on (stdin is not a tty); "
                               "nothing was changed", "run it in a terminal and type yes, or pass --yes")
        print("Type yes to restore: ", end="", file=self.out, flush=True)
        answer = self.stdin.readline()
        if answer.strip().lower() != "yes":
            shown = answer.strip()[:20] or "nothing"
            raise NotConfirmed(f"restore not confirmed (you typed {shown!r}, not 'yes'); nothing was changed",
                               "run it again and type yes to proceed")

    def safety_snapshot(self) -> None:
        assert self.j is not None
        try:
            path, _digest, _info, _taken = take_local_snapshot(self.r, self.clock, self.out, safety=True)
        except DRError as exc:
            print(f"{PROG}: warning: the safety snapshot of the current etcd failed ({exc}); continuing without one",
                  file=self.err)
            return
        self.j.safety_snapshot = str(path)
        self.mark(journal.SAFETY_SNAPSHOT)
        self.say(f"safety snapshot kept at {path} (restore it the same way if this restore was a mistake)")

    def reset(self) -> None:
        assert self.j is not None
        self.j.wipe_state = self.args.wipe_state
        labels = WIPE_STATE_TOO if self.j.wipe_state else WIPE_EPHEMERAL
        kept = "" if self.j.wipe_state else "; STATE (the machine config) is kept"
        self.say(f"resetting node {self.t.node}: wiping {' and '.join(labels)} (etcd's data){kept}, then reboot")
        # Recorded before the call: a Ctrl-C or crash while talosctl runs may leave the node reset, and the next
        # run must treat it as such. Only a definite refusal from the node takes the record back.
        self.mark(journal.RESET)
        try:
            self.t.reset(labels)
        except (NodeError, NodeUnreachable) as exc:
            # A refusal, or a connection that never opened, means no reset; a dropped connection may follow one.
            if isinstance(exc, NodeUnreachable) and "connection refused" not in exc.message.lower():
                raise
            self.unmark(journal.RESET)
            raise type(exc)(f"{exc.message}; the node was not reset", exc.hint) from exc

    def apply_config(self) -> None:
        node = self.t.node
        self.say(f"node {node} is in maintenance mode: applying the machine config from stack output "
                 f"{keys.CONTROLPLANE_CONFIG}")
        fd, name = tempfile.mkstemp(prefix=".controlplane-", suffix=".yaml", dir=self.r.talos_dir)  # 0600
        tmp = Path(name)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.controlplane)
            self.t.apply_config_insecure(tmp)
        finally:
            tmp.unlink(missing_ok=True)
        self.mark(journal.CONFIG_APPLIED)

    def bootstrap(self, snapshot: Path) -> None:
        node, timeout = self.t.node, self.args.bootstrap_timeout
        self.mark(journal.BOOTSTRAP_STARTED)
        self.say(f"bootstrapping etcd on node {node} from {snapshot} (bootstrap --recover-from) ...")
        deadline = time.monotonic() + timeout
        last = None
        while True:
            proc = self.t.bootstrap_recover(snapshot)
            if proc.returncode == 0:
                break
            text = proc.stderr + "\n" + proc.stdout
            waiting = next((n for n in NOT_READY if n in text), None)
            if waiting is None:
                exc = self.t.classify(text, "bootstrap --recover-from")
                if isinstance(exc, RestoreConflict):
                    self.unmark(journal.BOOTSTRAP_STARTED)  # refused: this restore's data is not in etcd
                    raise RestoreConflict(
                        f"bootstrap --recover-from on node {node} refused: etcd data directory is not empty",
                        f"etcd was not wiped; check `talosctl -n {node} service etcd`, then run "
                        f"`{self.resume_cmd()} --abandon-previous` to reset the node again") from None
                if not isinstance(exc, NodeUnreachable):
                    raise exc
                waiting = "node does not answer"
            if waiting != last:
                self.say(f"  node not ready yet: {waiting}; retrying")
                last = waiting
            if time.monotonic() >= deadline:
                self.unmark(journal.BOOTSTRAP_STARTED)  # every attempt was refused before it began
                raise Timeout(f"bootstrap --recover-from on node {node} did not succeed within "
                              f"{human_duration(timeout)} (last: {waiting})",
                              f"check `talosctl -n {node} service etcd` and `talosctl -n {node} time`; then run "
                              f"`{self.resume_cmd()}` again (or give it longer with --bootstrap-timeout)")
            time.sleep(self.args.poll_interval)
        self.mark(journal.BOOTSTRAPPED)
        self.say(f"etcd on node {node} restored from the snapshot")

    def health(self) -> None:
        node, timeout = self.t.node, self.args.health_timeout
        self.say(f"waiting for the cluster to be healthy (talosctl health, up to {human_duration(timeout)}) ...")
        try:
            self.t.health(wait_timeout=f"{max(int(timeout), 1)}s", timeout=timeout + 60)
        except DRError as exc:
            raise Timeout(f"node {node} did not become healthy within {human_duration(timeout)} after the restore "
                          f"({exc.message})",
                          f"etcd holds the snapshot's data; look at `talosctl -n {node} health` and "
                          f"`talosctl -n {node} logs etcd`; once healthy, run `{self.resume_cmd()}` again to "
                          "finish (or give it longer with --health-timeout)") from exc
        self.mark(journal.HEALTHY)

    def kubeconfig(self) -> Path:
        path = self.r.talos_dir / "kubeconfig"
        self.t.kubeconfig(path)
        os.chmod(path, 0o600)
        self.mark(journal.KUBECONFIG)
        self.say(f"wrote {path} (0600)")
        return path

    def finish(self, fetched: source.Fetched, status: SnapshotStatus, kubeconfig: Path) -> None:
        assert self.j is not None
        node = self.t.node
        took = human_duration(time.monotonic() - self.start)
        started = self.j.started_at
        rev = f" (revision {status.revision}, {status.total_keys} database entries)" if status.tool else ""
        talosconfig = self.r.talosconfig_path
        lines = [
            "",
            f"restore complete: cluster {self.r.cluster} on node {node} runs etcd from {fetched.path.name}{rev}.",
            f"this run took {took} (the restore started at {started}).",
        ]
        if self.j.safety_snapshot:
            lines.append(f"the etcd it replaced is kept in {self.j.safety_snapshot}")
        lines += [
            "check it:",
            f"  export KUBECONFIG={kubeconfig}",
            "  kubectl get nodes",
            "  kubectl get pods -A",
            f"  talosctl --talosconfig {talosconfig} -n {node} health",
            "then take a fresh backup: python -m dr.backup --save-to-s3",
        ]
        self.say("\n".join(lines))
        journal.remove(self.jpath)


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None,
         stdin: TextIO | None = None, now: Callable[[], datetime] | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    stdin = stdin if stdin is not None else sys.stdin
    clock = now or (lambda: datetime.now(UTC))
    p = cli.parser(PROG, "Restore the node's etcd from a snapshot: a local file, s3://bucket/key, or latest "
                         "(the newest in the stack's bucket). Checks everything first, asks you to type yes, "
                         "and continues where it stopped when run again.")
    p.add_argument("snapshot", metavar="SNAPSHOT", help="a local file, s3://bucket/key, or latest")
    p.add_argument("--yes", action="store_true", help="do not ask; needed when there is no terminal")
    p.add_argument("--no-safety-snapshot", action="store_true",
                   help="do not snapshot the current etcd before the reset (default: take one, best effort)")
    p.add_argument("--wipe-state", action="store_true",
                   help="also wipe STATE (the machine config); the node comes back in maintenance mode and the "
                        f"config is re-applied from stack output {keys.CONTROLPLANE_CONFIG}")
    p.add_argument("--abandon-previous", action="store_true",
                   help="drop a half-done restore's journal and start over from the node's current state")
    p.add_argument("--reboot-timeout", type=parse_duration, default=900.0, metavar="DURATION",
                   help="how long to wait for the node to come back after a reset or config apply (default 15m)")
    p.add_argument("--bootstrap-timeout", type=parse_duration, default=600.0, metavar="DURATION",
                   help="how long to retry bootstrap while the node says it is not ready (default 10m)")
    p.add_argument("--health-timeout", type=parse_duration, default=600.0, metavar="DURATION",
                   help="how long to wait for `talosctl health` after the bootstrap (default 10m)")
    p.add_argument("--poll-interval", type=parse_duration, default=2.0, metavar="DURATION",
                   help="how often to ask the node while waiting (default 2s)")
    p.add_argument("--wait-lock", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for a running backup to finish (default: fail at once)")
    add_common_flags(p)
    args = p.parse_args(argv)

    def body() -> int:
        r = Resolver(args)
        # 1. The cluster, from the stack's outputs (Automation API or outputs file). Nothing touches the node yet.
        controlplane = str(r.outputs.require(keys.CONTROLPLANE_CONFIG,
                                             "to re-apply the machine config if the node comes back in maintenance"))
        ensure_talosconfig(r, out)
        cfg = r.talosconfig
        if not cfg.has_credentials:
            raise ConfigError(f"talosconfig {cfg.path} (context {cfg.context}) has no client certificate",
                              f"a restore needs the admin talosconfig: stack output {keys.TALOSCONFIG}")
        t = r.talosctl()
        t.binary  # noqa: B018 - fails early when talosctl is missing
        ensure_snapshots_dir(r.snapshots_dir)
        with exclusive(r.talos_dir / LOCK_NAME, "a restore", wait=args.wait_lock):
            for leftover in clean_partials(r.snapshots_dir):
                print(f"removed {leftover.name} left by an interrupted run", file=err)
            job = Restore(args, r, t, controlplane, out, err, stdin, clock)
            try:
                return job.run()
            except BaseException as exc:
                j = job.j
                if j is not None and not j.past_point_of_no_return:
                    journal.remove(job.jpath)  # nothing half done: the node was not touched
                    j = None
                if isinstance(exc, KeyboardInterrupt):
                    if j is None:
                        print(f"\n{PROG}: interrupted before the node was reset; nothing was changed on it. Run "
                              "the same command again to start over.", file=err)
                    else:
                        print(f"\n{PROG}: interrupted after step {j.last_step!r}: the node was reset (or its reset "
                              f"was requested) and the restore is half done. Run `{job.resume_cmd()}` again to "
                              f"continue (journal {job.jpath}).", file=err)
                    return int(ExitCode.INTERRUPTED)
                if isinstance(exc, DRError) and j is not None and "run `python -m dr.restore" not in str(exc):
                    exc.hint = (exc.hint + "; then " if exc.hint else "") + (
                        f"run `{job.resume_cmd()}` again to continue the half-done restore (journal {job.jpath})")
                raise

    return cli.run(PROG, body, debug=args.debug, err=err)


if __name__ == "__main__":
    sys.exit(main())
