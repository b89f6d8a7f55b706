"""`python -m dr.restore <file | s3://bucket/key | latest>`: put a snapshot back into the node's etcd.

    python -m dr.restore latest                  # newest snapshot in the stack's bucket; asks you to type yes
    python -m dr.restore s3://bucket/key --yes   # no prompt (scripts, the demo)
    python -m dr.restore .talos/snapshots/etcd-snapshot-20260101T000000Z.db

Everything is checked before the point of no return (the reset): the snapshot's hash trailer, the talosconfig and
machine config, that the node answers, local disk space. Then: a safety snapshot of the current etcd, a reset that
wipes EPHEMERAL only (the docs' DR flow: STATE keeps the machine config), wait for the node, re-apply the machine
config if the node came back in maintenance, `bootstrap --recover-from`, wait for etcd to start from it (the node
checks the snapshot then, not during the call), wait for health, regenerate the kubeconfig.

Before any of that, the snapshot is proved exactly as `talos-dr verify` proves it (dr.commands.verify.prove), and the
revision moves forward: the proof's throwaway etcd restores the snapshot with `--bump-revision 1000000000
--mark-compacted` and the node gets a fresh snapshot of it. Why here and not on the node: Talos v1.13.9's recovery
(internal/app/machined/pkg/system/services/etcd.go recoverFromSnapshot) calls etcdutl's snapshot.Restore with name,
data dir, peer URLs and SkipHashCheck only, no RevisionBump/MarkCompacted; etcd's guide (v3.6 op-guide/recovery.md
"Restoring with revision bump", etcd-io/etcd#16028) recommends both for Kubernetes, whose informers otherwise see
revisions go back. The bump and the compaction mark live in the database file (the key bucket's latest revision and
the meta bucket's scheduledCompactRev, etcd v3.6.12 etcdutl/snapshot/v3_snapshot.go modifyLatestRevision), so a plain
restore of the saved copy on the node keeps them. 1e9 is the guide's figure (a week at 1500 writes/s).

The loop here probes the node, asks ``dr.core.restore_plan.plan`` what to do next, and does it; the plan is a pure
function of the node's state, the journal (``.talos/restore-journal.json``) and the flags. Running the same command
again after Ctrl-C, a crash or a timeout continues from where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO, cast

from dr.adapters import journal_file
from dr.adapters.etcdlocal import SnapshotStatus
from dr.adapters.fsutil import atomic_write
from dr.adapters.lock import exclusive
from dr.adapters.talosctl import Talosctl
from dr.commands import cli, source, verify
from dr.commands.backup import LOCK_NAME, clean_partials, ensure_snapshots_dir
from dr.commands.restore import prompt, steps, undo
from dr.commands.restore.probe import probe
from dr.commands.settings import Resolver, add_common_flags
from dr.core import cluster_nodes, journal, spelling, timefmt
from dr.core import outputs as keys
from dr.core import restore_plan as pl
from dr.core.errors import (
    ConfigError,
    DRError,
    ExitCode,
    NodeError,
    NodeUnreachable,
    RestoreConflict,
    Timeout,
)
from dr.core.node_state import UNREACHABLE, NodeState

PROG = spelling.command("restore")


def ensure_talosconfig(r: Resolver, out: TextIO) -> None:
    """Write ``.talos/talosconfig`` (0600) from the stack output when it is missing, as `pulumi up` would."""
    path = r.talosconfig_path
    if path.exists() or path.is_symlink() or path != r.talos_dir / "talosconfig":
        return
    text = r.outputs.get(keys.TALOSCONFIG)
    if not text:
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, str(text), mode=0o600, overwrite=False)  # never over a talosconfig that appeared meanwhile
    print(f"wrote {path} from stack output {keys.TALOSCONFIG} (it was missing)", file=out)


# The structure check without etcd's tools; kept importable here (it now lives with the one proof in dr.commands.verify).
check_bbolt_meta = verify.check_bbolt_meta


class Restore:
    """One run of the restore command: probe, plan, act, until done."""

    def __init__(self, args, r: Resolver, t: Talosctl, controlplane: str, out: TextIO, err: TextIO,
                 stdin: TextIO, clock: Callable[[], datetime]):
        self.args, self.r, self.t, self.controlplane = args, r, t, controlplane
        self.out, self.err, self.stdin, self.clock = out, err, stdin, clock
        self.jpath = journal.path_for(r.talos_dir)
        self.j: journal.Journal | None = None
        self.abandoned_past_reset = False
        self.confirmed = False
        self.safety_done = False
        self.failed_retry: str | None = None  # etcd's Failed message this run bootstrapped again after (F2)
        self.start = time.monotonic()
        self.fetched: source.Fetched | None = None
        self.status = SnapshotStatus(None, None)
        self.proof: verify.Proof | None = None
        self.bump_dir = r.talos_dir
        self.upload_path: Path | None = None
        self.flags: list[str] = journal.resume_flags(list(getattr(args, "argv", None) or []), args.snapshot)

    # --- helpers ------------------------------------------------------------------------------------------

    def say(self, msg: str) -> None:
        # Names from S3 or argv are in these lines: no control characters reach the terminal (hostile 27, 29).
        print("\n".join(cli.printable(line, limit=4000) for line in msg.split("\n")), file=self.out, flush=True)

    def resume_cmd(self) -> str:
        """The command that continues this restore: the resolved snapshot (never ``latest``) and every flag given."""
        if self.j is not None:
            spec, flags = self.j.spec, self.j.flags
        else:
            spec = self.fetched.origin if self.fetched is not None else self.args.snapshot
            flags = self.flags
        return spelling.command("restore", spec, *flags)

    def mark(self, step: str) -> None:
        assert self.j is not None
        journal_file.mark(self.jpath, self.j, step)

    def unmark(self, step: str) -> None:
        """The node refused the step outright: record that it did not happen, so a re-run does it again."""
        assert self.j is not None
        if self.j.steps.pop(step, None) is not None:
            journal_file.save(self.jpath, self.j)

    def options(self) -> pl.Options:
        return pl.Options(wipe_state=bool(self.j.wipe_state if self.j else self.args.wipe_state),
                          no_safety_snapshot=self.args.no_safety_snapshot, confirmed=self.confirmed,
                          safety_done=self.safety_done, abandoned_past_reset=self.abandoned_past_reset,
                          preparing_long=self.args.preparing_long, failed_retried=self.failed_retry is not None)

    def timeout_for(self, phase: str | None) -> float:
        if phase == pl.RESET_BEGIN:
            return min(pl.RESET_BEGIN_GRACE, self.args.reboot_timeout)
        if phase == pl.RECOVERY:
            return self.args.bootstrap_timeout
        return self.args.reboot_timeout

    def timeout_error(self, st: NodeState, phase: str | None, timeout: float, why: str) -> DRError:
        node = self.t.node
        changed = bool(self.j and self.j.past_point_of_no_return) or self.abandoned_past_reset
        if phase == pl.RECOVERY:
            return Timeout(
                f"etcd on node {self.t.where} did not start from the snapshot within {timefmt.human_duration(timeout)} "
                f"after the bootstrap (last seen: {st.describe()})",
                f"look at `talosctl -n {node} -e {self.t.endpoint} service etcd` and `logs etcd`; run "
                f"`{self.resume_cmd()}` again to keep waiting (or give it longer with --bootstrap-timeout)")
        tail = "" if changed else "; nothing was changed"
        verb = "come back and settle" if changed else "settle"
        return Timeout(
            f"node {self.t.where} did not {verb} ({why}) within {timefmt.human_duration(timeout)} (last seen: "
            f"{st.describe()}){tail}",
            f"check the instance is running (EC2 console: state, system log); when `talosctl -e {self.t.endpoint} "
            f"-n {node} service etcd` (or, in maintenance, `talosctl -n {self.t.endpoint} version --insecure`) "
            f"answers, run `{self.resume_cmd()}` again" + (f": it continues from {self.jpath}" if changed else "")
            + " (or give it longer with --reboot-timeout)")

    def refuse(self, st: NodeState) -> DRError:
        node = self.t.where
        if st.kind == UNREACHABLE:
            why = st.error.message if st.error else "no answer"
            said = why if "does not answer on port 50000" in why else \
                f"node {node} does not answer on port 50000 ({why})"  # say it once (first-use C4)
            return NodeUnreachable(
                f"{said}; nothing was changed",
                "check the instance is running and the security group admits your IP; if the node and its disk are "
                "gone, `pulumi up --refresh` rebuilds it first (docs/RUNBOOK.md)")
        assert st.error is not None
        return type(st.error)(f"{st.error.message}; nothing was changed", st.error.hint)

    # --- the flow -----------------------------------------------------------------------------------------

    def run(self) -> int:
        self.fetched = fetched = self.fetch()
        self.bump_dir = Path(tempfile.mkdtemp(prefix=".restore-bump-", dir=self.r.talos_dir))
        try:
            return self._run(fetched)
        finally:
            shutil.rmtree(self.bump_dir, ignore_errors=True)

    def _run(self, fetched: source.Fetched) -> int:
        self.proof = self.prove(fetched)
        self.status = self.proof.status
        self.j = self.previous_journal(fetched)
        if self.j is not None:
            self.say(f"continuing the restore of {self.j.snapshot_origin} started at {self.j.started_at} "
                     f"(last step done: {self.j.last_step}; journal {self.jpath})")
        waiting: tuple[str | None, float, float, str] | None = None  # (phase, began, deadline, last shown)
        while True:
            st = probe(self.t)
            step = pl.plan(st, self.j, self.options(), self.clock())
            if step.action == pl.WAIT:
                if waiting is None or waiting[0] != step.phase:
                    timeout = self.timeout_for(step.phase)
                    now = time.monotonic()
                    waiting = (step.phase, now, now + timeout, "")
                    self.say(f"waiting for node {self.t.where} {step.why} (up to {timefmt.human_duration(timeout)}) ...")
                phase, began, deadline, shown = waiting
                now = time.monotonic()
                if st.describe() != shown:
                    self.say(f"  {timefmt.human_duration(now - began):>6}  node is {st.describe()}")
                    waiting = (phase, began, deadline, st.describe())
                if now >= deadline and phase == pl.RESET_BEGIN:
                    # The recorded reset never showed on the node: it was never sent (the run died between recording
                    # and sending it) or someone bootstrapped the node since. Nothing was destroyed: start over.
                    self.act(pl.Step(pl.START_OVER), st)
                    waiting = None
                    continue
                if now >= deadline:
                    raise self.timeout_error(st, phase, deadline - began, step.why)
                time.sleep(min(self.args.poll_interval, max(deadline - now, 0.05)))
                continue
            if waiting is not None:
                self.say(f"  node {self.t.where} is {st.describe()} ({timefmt.human_duration(time.monotonic() - waiting[1])})")
                waiting = None
            if step.action == pl.DONE:
                break
            self.act(step, st)
        self.finish()
        return 0

    def act(self, step: pl.Step, st: NodeState) -> None:
        a = step.action
        if a == pl.REFUSE:
            raise self.refuse(st)
        if a == pl.CONFIRM:
            self.do_confirm(step, st)
        elif a == pl.SAFETY_SNAPSHOT:
            self.safety_done = True
            path = steps.safety_snapshot(self.r, self.clock, self.out, self.err, PROG)
            if path is not None:
                assert self.j is not None
                self.j.safety_snapshot = str(path)
                self.mark(journal.SAFETY_SNAPSHOT)
        elif a == pl.RESET:
            self.do_reset()
        elif a == pl.START_OVER:
            assert self.j is not None
            self.say(f"node {self.t.where} runs etcd with data although this restore recorded a reset at "
                     f"{self.j.steps.get(journal.RESET)} (the reset never reached the node, or someone bootstrapped "
                     "it since); starting again from the confirmation, with a safety snapshot of what it holds now")
            for s in (journal.RESET, journal.SAFETY_SNAPSHOT, journal.CONFIRMED, journal.NODE_BACK):
                self.j.steps.pop(s, None)
            journal_file.save(self.jpath, self.j)
            self.confirmed = self.safety_done = False
        elif a == pl.APPLY_CONFIG:
            self.node_back()
            steps.apply_config(self.t, self.r.talos_dir, self.controlplane, self.out)
            self.mark(journal.CONFIG_APPLIED)
        elif a == pl.BOOTSTRAP:
            self.node_back()
            if step.phase == pl.RETRY_AFTER_FAILED:
                self.failed_retry = step.why
                self.say(steps.failed_retry_note(self.t, step.why))
            self.do_bootstrap()
        elif a == pl.RECOVERY_FAILED:
            raise steps.recovery_failed(self.t, step.why, self.j, self.resume_cmd())
        elif a == pl.HEALTH:
            assert self.j is not None
            if not self.j.done(journal.BOOTSTRAPPED):
                self.mark(journal.BOOTSTRAPPED)
                self.say(f"etcd on node {self.t.where} runs from the snapshot")
            else:
                self.say(f"etcd on node {self.t.where} already runs from the snapshot (the earlier run's "
                         "bootstrap --recover-from finished)")
            # A replaced machine's Node came back with the snapshot: remove it, or health never passes (F1).
            steps.remove_stale_nodes(self.t, self.r.talos_dir, {self.t.node, self.t.endpoint},
                                     self.args.health_timeout, self.args.poll_interval, self.out, self.err, PROG)
            steps.health(self.t, self.args.health_timeout, self.out, self.resume_cmd())
            steps.warn_alarms(self.t, self.err, PROG)  # a NOSPACE alarm comes back with the snapshot (F7)
            self.mark(journal.HEALTHY)
        elif a == pl.KUBECONFIG:
            path = steps.kubeconfig(self.t, self.r.talos_dir)
            self.mark(journal.KUBECONFIG)
            self.say(f"wrote {path} (0600)")
        else:  # pragma: no cover - every action is handled above
            raise AssertionError(f"unhandled restore step {a}")

    def node_back(self) -> None:
        if self.j is not None and self.j.done(journal.RESET) and not self.j.done(journal.NODE_BACK):
            self.mark(journal.NODE_BACK)

    def do_confirm(self, step: pl.Step, st: NodeState) -> None:
        assert self.fetched is not None
        if step.safety:
            steps.check_disk(self.r.snapshots_dir, self.fetched.digest.size)
        if self.j is not None and self.j.past_point_of_no_return:
            self.say("the journal records a reset by this restore, but the node's state does not show one: "
                     "asking again")
        # What it undoes: a diff against a fresh snapshot of the node's data (issue 25); an empty etcd loses nothing.
        undoes = undo.what_it_undoes(self.r, self.fetched, self.err, st.kind) if step.needs_reset else None
        prompt.confirm(fetched=self.fetched, status=self.status, proof=self.proof, cluster=self.r.cluster,
                       data_dir_copy=self.args.from_data_dir_copy, node=self.t.where,
                       node_state=st.describe(), needs_reset=step.needs_reset, safety=step.safety,
                       wipe_state=self.args.wipe_state, snapshots_dir=str(self.r.snapshots_dir), yes=self.args.yes,
                       now=self.clock(), out=self.out, stdin=self.stdin, undoes=undoes)
        self.confirmed = True
        if self.j is None:
            f = self.fetched
            self.j = journal.Journal(spec=f.origin, snapshot_path=str(f.path),
                                     snapshot_sha256=f.digest.content_sha256, snapshot_origin=f.origin,
                                     node=self.t.node, cluster=self.r.cluster, wipe_state=self.args.wipe_state,
                                     flags=self.flags)
        self.mark(journal.CONFIRMED)
        if not step.needs_reset:
            self.say(f"node {self.t.where} is {st.describe()}: its etcd is empty, so no reset is needed")
        elif not step.safety:
            self.say("no safety snapshot: " + ("--no-safety-snapshot" if self.args.no_safety_snapshot
                                               else f"etcd on node {self.t.where} is not running ({st.describe()})"))

    def do_reset(self) -> None:
        assert self.j is not None
        self.j.wipe_state = self.args.wipe_state
        labels = prompt.wipe_labels(self.j.wipe_state)
        kept = "" if self.j.wipe_state else "; STATE (the machine config) is kept"
        self.say(f"resetting node {self.t.where}: wiping {' and '.join(labels)} (etcd's data){kept}, then reboot")
        # Recorded before the call: a Ctrl-C or crash while talosctl runs may leave the node reset, and the next
        # run must treat it as such. Only a definite refusal from the node takes the record back.
        self.mark(journal.RESET)
        try:
            self.t.reset(labels)
        except (NodeError, NodeUnreachable, ConfigError) as exc:
            # A refusal, or a connection that never opened, means no reset; a dropped connection may follow one.
            if isinstance(exc, NodeUnreachable) and "connection refused" not in exc.message.lower():
                raise
            self.unmark(journal.RESET)
            raise type(exc)(f"{exc.message}; the node was not reset", exc.hint) from exc

    def do_bootstrap(self) -> None:
        assert self.j is not None and self.fetched is not None
        self.mark(journal.BOOTSTRAP_STARTED)
        try:
            steps.bootstrap(self.t, self.upload_path or self.fetched.path, self.args.bootstrap_timeout, self.args.poll_interval,
                            self.out, self.resume_cmd())
        except steps.NotStarted as refused:
            if self.failed_retry is not None and isinstance(refused.error, RestoreConflict):
                # AlreadyExists after etcd Failed: the node had read the snapshot, and refused it (F2).
                raise steps.recovery_failed(self.t, self.failed_retry, self.j, self.resume_cmd()) from None
            self.unmark(journal.BOOTSTRAP_STARTED)  # refused before it began: this restore's data is not in etcd
            raise refused.error from None
        self.say(f"bootstrap accepted by node {self.t.where}; the node now checks the snapshot and starts etcd "
                 "from it")

    def prove(self, fetched: source.Fetched) -> verify.Proof:
        """The proof `talos-dr verify` makes (dr.commands.verify.prove), before the journal is read and before
        anything on the node changes: a snapshot verify refuses is refused here, with the node untouched."""
        report = verify.Report(source=fetched.origin)
        raw = self.args.from_data_dir_copy
        bump_into = None if self.args.no_revision_bump else self.bump_dir / "bumped-snapshot.db"
        proof = verify.prove(fetched, report, base=self.tmp_base(), cluster=source.known_cluster(self.r),
                             err=self.err, prog=PROG, skip_etcd=self.args.skip_etcd_proof and not raw, raw=raw,
                             bump_into=bump_into)
        # What the node gets: the bumped snapshot (with a SHA-256 trailer, which the node checks), else the file.
        self.upload_path = proof.bumped or fetched.path
        if raw and proof.bumped is None:
            self.t.recover_skip_hash_check = True  # the raw file itself goes up: it has no hash for the node to check
        if proof.bumped is not None:
            self.say(f"the node gets a copy whose revision is moved forward by {proof.bump} and marked compacted "
                     "(etcdutl snapshot restore --bump-revision --mark-compacted, then a fresh snapshot): clients "
                     "that watched the old cluster start over instead of seeing revisions go back")
        elif bump_into is not None:
            self.say(f"warning: the revision is NOT moved forward: {proof.not_bumped or 'etcd was not run here'}; "
                     "clients that cached resourceVersions of the lost cluster may see them go back")
        size = cli.human_size(fetched.digest.size)
        if proof.content is not None:
            c = proof.content
            self.say(f"snapshot {fetched.path}: {size}, proved: "
                     f"{'bbolt meta pages (NO hash: a data-dir copy)' if raw else 'SHA-256 trailer'}, "
                     f"{proof.status.command or 'bbolt'} "
                     f"check, restored in a throwaway etcd at revision {c.revision} with {c.total_keys} keys "
                     f"({c.registry_keys} Kubernetes objects)")
        else:
            self.say(f"snapshot {fetched.path}: {size}, SHA-256 trailer and bbolt meta pages checked; NOT proved "
                     f"({verify.SKIP_ETCD_FLAG}): {'; '.join(proof.skipped)}")
        return proof

    def tmp_base(self) -> Path:
        """Where the throwaway etcd goes: $TMPDIR or /tmp (as for `talos-dr verify`)."""
        return Path(tempfile.gettempdir())

    def fetch(self) -> source.Fetched:
        if self.args.from_data_dir_copy:
            return verify.fetch_data_dir_copy(self.args.snapshot)
        return source.fetch(self.args.snapshot, self.r, self.r.downloads_dir, self.err)

    def previous_journal(self, fetched: source.Fetched) -> journal.Journal | None:
        try:
            j = journal_file.load(self.jpath)
        except ConfigError:
            if not self.args.abandon_previous:
                raise
            self.say(f"removing the unreadable restore journal {self.jpath} (--abandon-previous)")
            journal_file.remove(self.jpath)
            self.abandoned_past_reset = True  # unknown: assume the node may be mid-reset and wait for it
            return None
        if j is None:
            return None
        same = j.snapshot_sha256 == fetched.digest.content_sha256 and j.node == self.t.node
        if self.args.abandon_previous:
            self.say(f"abandoning the half-done restore of {j.snapshot_origin} to node {j.node} (started "
                     f"{j.started_at}, last step {j.last_step}); starting over from the node's current state")
            journal_file.remove(self.jpath)
            self.abandoned_past_reset = j.past_point_of_no_return
            return None
        if not same:
            raise RestoreConflict(
                f"a different restore is half done: {j.snapshot_origin} to node {j.node}, started {j.started_at}, "
                f"last step {j.last_step} (journal {self.jpath})",
                f"finish it with `{spelling.command('restore', j.spec, *j.flags)}`"
                f", or pass --abandon-previous to restore {fetched.origin} instead")
        return j

    def summary(self) -> dict:
        """What a --json run prints when the restore is complete."""
        assert self.j is not None and self.fetched is not None
        return {"ok": True, "snapshot": self.fetched.origin, "local_path": str(self.fetched.path),
                "sha256": self.fetched.digest.content_sha256, "revision": (self.proof.content.revision if self.proof is not None and self.proof.content is not None
                             else self.status.revision),
                "cluster": self.r.cluster, "node": self.t.node, "started_at": self.j.started_at,
                "safety_snapshot": self.j.safety_snapshot, "kubeconfig": str(self.r.talos_dir / "kubeconfig"),
                "seconds": round(time.monotonic() - self.start, 1), "exit_code": 0}

    def finish(self) -> None:
        assert self.j is not None and self.fetched is not None
        node = self.t.node
        took = timefmt.human_duration(time.monotonic() - self.start)
        status = self.status
        content = self.proof.content if self.proof is not None else None
        rev = (f" (revision {content.revision}, {content.total_keys} keys)" if content is not None else
               f" (revision {status.revision}, {status.total_keys} database entries)" if status.tool else "")
        talosconfig = self.r.talosconfig_path
        kubeconfig = self.r.talos_dir / "kubeconfig"
        lines = [
            "",
            f"restore complete: cluster {self.r.cluster} on node {node} runs etcd from {self.fetched.path.name}{rev}.",
            f"this run took {took} (the restore started at {self.j.started_at}).",
        ]
        if self.j.safety_snapshot:
            lines.append(f"the etcd it replaced is kept in {self.j.safety_snapshot}")
        lines += [
            "check it:",
            f"  export KUBECONFIG={kubeconfig}",
            "  kubectl get nodes",
            "  kubectl get pods -A",
            f"  talosctl --talosconfig {talosconfig} -e {self.t.endpoint} -n {node} health "
            f"--control-plane-nodes {node}",
            f"then take a fresh backup: {spelling.command('backup')} --save-to-s3",
        ]
        self.say("\n".join(lines))
        journal_file.remove(self.jpath)


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(PROG, "Restore the node's etcd from a snapshot: a local file, s3://bucket/key, or latest "
                         "(the newest in the stack's bucket). Checks everything first, asks you to type yes, "
                         "and continues where it stopped when run again.", examples=(
                             f"{PROG} latest                 # the newest snapshot; asks you to type yes",
                             f"{PROG} latest~1               # the one before it",
                             f"{PROG} etcd-snapshot-20260101T000000Z.db   # a name `list` prints",
                             f"{PROG} latest --identity ~/talos-dr-age.key  # encrypted snapshots",
                         ))
    p.add_argument("snapshot", metavar="SNAPSHOT", help="a name `list` prints, a local file, s3://bucket/key, "
                                                       "`latest`, `latest~N` or `latest-verified`")
    p.add_argument("--yes", action="store_true", help="do not ask; needed when there is no terminal")
    p.add_argument("--no-safety-snapshot", action="store_true",
                   help="do not snapshot the current etcd before the reset (default: take one, best effort)")
    p.add_argument("--wipe-state", action="store_true",
                   help="also wipe STATE (the machine config); the node comes back in maintenance mode and the "
                        f"config is re-applied from stack output {keys.CONTROLPLANE_CONFIG}")
    p.add_argument("--cert-fingerprint", action="append", default=[], metavar="SHA256",
                   help="in maintenance mode, accept only a node certificate with this fingerprint (printed on the "
                        "node's console); without it the config, which holds every cluster key, goes to a server "
                        "nobody authenticated (encrypted, not authenticated)")
    p.add_argument("--abandon-previous", action="store_true",
                   help="drop a half-done restore's journal and start over from the node's current state")
    p.add_argument("--reboot-timeout", type=cli.parse_duration, default=900.0, metavar="DURATION",
                   help="how long to wait for the node to come back after a reset or config apply (default 15m)")
    p.add_argument("--bootstrap-timeout", type=cli.parse_duration, default=600.0, metavar="DURATION",
                   help="how long to retry bootstrap while the node is not ready, and to wait for etcd to start "
                        "from the snapshot (default 10m)")
    p.add_argument("--health-timeout", type=cli.parse_duration, default=600.0, metavar="DURATION",
                   help="how long to wait for `talosctl health` after the bootstrap (default 10m)")
    p.add_argument("--poll-interval", type=cli.parse_duration, default=2.0, metavar="DURATION",
                   help="how often to ask the node while waiting (default 2s)")
    p.add_argument("--preparing-long", type=cli.parse_duration, default=30.0, metavar="DURATION",
                   # A test knob: how long etcd in Preparing means "waiting for a bootstrap" when this restore did not
                   # reset the node itself (on a real node the pre-start is brief on boot; the join loop is long).
                   help=argparse.SUPPRESS)
    p.add_argument(verify.SKIP_ETCD_FLAG, dest="skip_etcd_proof", action="store_true",
                   help="when this machine has no etcd and etcdutl (or an etcdctl before 3.6) to prove the snapshot "
                        "in a throwaway etcd first, as `talos-dr verify` does, restore anyway on the SHA-256 "
                        "trailer and bbolt meta-page checks alone: damaged pages are then found by the node only "
                        "after its reset. Ignored when the tools are there")
    p.add_argument(verify.DATA_DIR_FLAG, dest="from_data_dir_copy", action="store_true",
                   help="SNAPSHOT is a raw member/snap/db copied from etcd's data directory (e.g. out of an EBS "
                        "snapshot of the node's disk, when no snapshot is left): it has no hash trailer, so after "
                        "the bbolt check and the throwaway-etcd proof the node is told --recover-skip-hash-check; "
                        "writes only in etcd's WAL at copy time are not in it (the prompt says so)")
    p.add_argument("--no-revision-bump", action="store_true",
                   help="give the node the snapshot as it is, without moving its revision forward (by default the "
                        f"throwaway etcd restores it with --bump-revision {verify.BUMP_REVISION} --mark-compacted, as "
                        "etcd's disaster-recovery guide recommends for Kubernetes, and that copy is uploaded)")
    p.add_argument("--rollback", action="store_true",
                   help="three nodes: restore even though etcd's quorum is intact (a point-in-time rollback of a "
                        "working cluster; everything written since the snapshot is lost). Without it, a cluster whose "
                        "quorum holds is refused (exit 29): replace a lost member with `talos-dr replace-member NODE`")
    p.add_argument("--join-timeout", type=cli.parse_duration, default=900.0, metavar="DURATION",
                   help="three nodes: how long to wait for each other node to join the restored cluster as a voting "
                        "member (default 15m)")
    p.add_argument("--wait-lock", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for a running backup to finish (default: fail at once)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document on stdout at the end, also on failure (progress goes to stderr)")
    add_common_flags(p)
    return p


def run(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO, clock: Callable[[], datetime]) -> int:
    """Check everything, ask, and restore (or continue a half-done restore from its journal). With ``--json``,
    ``out`` holds only the document and the narrative goes to ``err``."""
    tracked = cast(cli.Tracked, out) if args.json else None
    say_to = err if args.json else out
    r = Resolver(args)
    # 1. The cluster, from the stack's outputs (Automation API or outputs file). Nothing touches the node yet.
    controlplane = str(r.outputs.require(keys.CONTROLPLANE_CONFIG,
                                         "to re-apply the machine config if the node comes back in maintenance"))
    # Its note goes to the raw stdout, as before the parser/runner split (under --json too).
    ensure_talosconfig(r, tracked.stream if tracked is not None else out)
    cfg = r.talosconfig
    if not cfg.has_credentials:
        raise ConfigError(f"talosconfig {cfg.path} (context {cfg.context}) has no client certificate",
                          f"a restore needs the admin talosconfig: stack output {keys.TALOSCONFIG}")
    # An expired client certificate reads as a bare "bad certificate" from the node: say "expired".
    from dr.adapters.talosapi import check_client_certificate
    from dr.adapters.talosctl import talosconfig_credentials

    check_client_certificate(talosconfig_credentials(cfg).cert_pem, now=clock())
    t = r.talosctl()
    t.binary  # noqa: B018 - fails early when talosctl is missing
    ensure_snapshots_dir(r.snapshots_dir)
    with exclusive(r.talos_dir / LOCK_NAME, "a restore", wait=args.wait_lock):
        for leftover in clean_partials(r.snapshots_dir) + steps.sweep_controlplane_temps(r.talos_dir):
            print(f"removed {leftover.name} left by an interrupted run", file=err)
        nodes = cluster_nodes.from_outputs(r.outputs.values)
        if len(nodes) > 1:  # three control-plane nodes: every node probed, exactly one bootstrapped (issue 24)
            from dr.commands.restore.ha import HaRestore

            job: Restore = HaRestore(args, r, t, controlplane, say_to, err, stdin, clock, nodes)
        else:
            job = Restore(args, r, t, controlplane, say_to, err, stdin, clock)
        try:
            rc = job.run()
            if tracked is not None:
                print(json.dumps(job.summary(), indent=2), file=tracked)
            return rc
        except BaseException as exc:
            j = job.j
            if j is not None and not j.past_point_of_no_return:
                journal_file.remove(job.jpath)  # nothing half done: the node was not touched
                j = None
            if isinstance(exc, KeyboardInterrupt):
                if j is None:
                    print(f"\n{PROG}: interrupted before the node was reset; nothing was changed on it. Run "
                          "the same command again to start over.", file=err)
                else:
                    print(f"\n{PROG}: interrupted after step {j.last_step!r}: the node was reset (or its reset "
                          f"was requested) and the restore is half done. Run `{job.resume_cmd()}` again to "
                          f"continue (journal {job.jpath}).", file=err)
                cli.json_failure(tracked, "interrupted" + (f" after step {j.last_step!r}; run `{job.resume_cmd()}`"
                                                           " again to continue" if j is not None else
                                                           " before the node was reset; nothing was changed"),
                                 int(ExitCode.INTERRUPTED))
                return int(ExitCode.INTERRUPTED)
            if isinstance(exc, DRError) and j is not None and f"run `{PROG}" not in str(exc):
                exc.hint = (exc.hint + "; then " if exc.hint else "") + (
                    f"run `{job.resume_cmd()}` again to continue the half-done restore (journal {job.jpath})")
            raise


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None,
         stdin: TextIO | None = None, now: Callable[[], datetime] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    clock = now or (lambda: datetime.now(UTC))
    return cli.execute(PROG, args, lambda o, e: run(args, o, e, stdin if stdin is not None else sys.stdin, clock),
                       out=out, err=err)
