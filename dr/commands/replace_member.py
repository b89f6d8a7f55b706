"""`talos-dr replace-member <node name | private IP>`: one control-plane member is lost and the other two keep a quorum:
replace it without restoring any snapshot.

    talos-dr replace-member cp-3            # asks you to type yes before the first change
    talos-dr replace-member 10.0.3.5 --yes  # no prompt (scripts, the demo)

The steps, each said before it runs: every node is asked where it is (its etcd, and the member list the others
answer with a leader); the command refuses unless the others are healthy voters that keep a quorum without the lost
one (a lost quorum is `talos-dr restore`'s case, exit 31); one typed yes; a safety snapshot from a healthy member
(the backup's path, kept as ``pre-restore-...``); ``etcd remove-member`` of the lost member, asked of a healthy one;
then the node is rebuilt: a lost instance by ``pulumi up --refresh`` (which the command tells you to run, see below),
an instance that answers but whose etcd is broken by ``reset --graceful=false --reboot --system-labels-to-wipe
EPHEMERAL`` on that node alone; then it watches the node join: a learner (Talos's join loop, services/etcd.go
``addMember``), a voter (``promoteMember``), etcd healthy on every node, its Kubernetes Node Ready. Nothing is written
to a healthy member's data: the only calls that change anything are the member removal (etcd's membership, through
a healthy member) and the reset of the lost node itself. The pure decisions are ``dr.core.member_repair``.

Why the command does not run ``pulumi up`` itself (through the Automation API, as ``talos-dr rebuild`` does for its
imports): ``pulumi up --refresh`` updates the whole stack, and its preview is the operator's one chance to see that it
replaces only the lost instance (and re-associates its Elastic IP and volumes) and nothing else that drifted;
running it unattended would either skip that look or re-implement it. So the command says exactly what to run, in
which folder, and waits for the new instance (``--rebuild-timeout``); it can be run again at any time and continues
from its journal (``.talos/replace-member-journal.json``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from dr.adapters import talosctl_etcd
from dr.adapters.fsutil import atomic_write, read_state_file
from dr.adapters.lock import exclusive
from dr.adapters.stack_outputs import PROJECT_DIR, STACK_ENV
from dr.adapters.talosctl import ServiceStatus, Talosctl
from dr.commands import cli
from dr.commands.backup import LOCK_NAME, ensure_snapshots_dir
from dr.commands.restore import probe as probing
from dr.commands.settings import Resolver, add_common_flags, find_project
from dr.core import cluster_nodes, journal, spelling, timefmt
from dr.core import member_repair as mr
from dr.core import outputs as keys
from dr.core.cluster_nodes import ClusterNode
from dr.core.errors import (
    ConfigError,
    DRError,
    ExitCode,
    NodeError,
    NodeUnreachable,
    NotConfirmed,
    ReplaceRefused,
    Timeout,
)
from dr.core.node_state import ETCD_RUNNING

PROG = spelling.command("replace-member")
NODE_READY_PHASE = "node_ready"


class _Cached:
    """The probe's view of a node, keeping the ``service etcd`` answer so its health is read once per look."""

    def __init__(self, t: Talosctl):
        self.t = t
        self.svc: ServiceStatus | None = None

    def stage(self, *, insecure: bool = False) -> str:
        return self.t.stage(insecure=insecure)

    def service(self, service: str = "etcd") -> ServiceStatus:
        self.svc = self.t.service(service)
        return self.svc


def look(node: ClusterNode, t: Talosctl) -> mr.Seen:
    """Ask one node where it is: stage and etcd (``dr.commands.restore.probe``), etcd's health, and, when etcd runs,
    the member list it answers with a leader."""
    api = _Cached(t)
    state = probing.probe(api)
    health = api.svc.health if api.svc is not None else None
    if state.kind != ETCD_RUNNING:
        return mr.Seen(node, state, None, health)
    try:
        return mr.Seen(node, state, tuple(talosctl_etcd.members(t)), health)
    except DRError as exc:
        return mr.Seen(node, state, None, health, error=exc.message)


def project_dir() -> Path:
    """The folder `pulumi up` runs in: the project (Pulumi.yaml) this folder is in, else this checkout's."""
    return find_project(Path.cwd()) or find_project(PROJECT_DIR) or Path.cwd()


def endpoint_for(node: ClusterNode, endpoints: tuple[str, ...]) -> str:
    """The talosconfig's endpoint for ``node``: the one naming its Elastic IP (it may carry a port, ``IP:50001``), else
    the Elastic IP itself (talosctl's default port 50000)."""
    for e in endpoints:
        host = urlsplit(f"//{e}").hostname
        if host == node.public_ip or e == node.public_ip:
            return e
    return node.public_ip


class Replace:
    """One run of the command: look at every node, plan, act, until done."""

    def __init__(self, args, r: Resolver, nodes: list[ClusterNode], target: ClusterNode, out: TextIO, err: TextIO,
                 stdin: TextIO, clock: Callable[[], datetime]):
        self.args, self.r, self.nodes, self.target = args, r, nodes, target
        self.out, self.err, self.stdin, self.clock = out, err, stdin, clock
        self.jpath = r.talos_dir / mr.JOURNAL_NAME
        self.j: mr.RepairJournal | None = None
        self.opts = mr.Options(no_safety_snapshot=args.no_safety_snapshot)
        self.start = time.monotonic()
        self.cfg = r.talosconfig
        self.joined: str | None = None  # the node's new member as last said: "learner", "voter"

    def talosctl(self, node: ClusterNode) -> Talosctl:
        """Dial the node's Elastic IP, name its private IP (apid forwards any other address)."""
        return Talosctl(node.private_ip, self.cfg.path, endpoint=endpoint_for(node, self.cfg.endpoints),
                        context=self.args.talos_context)

    def say(self, msg: str) -> None:
        print("\n".join(cli.printable(line, limit=4000) for line in msg.split("\n")), file=self.out, flush=True)

    def resume_cmd(self) -> str:
        return spelling.command("replace-member", self.target.name)

    def save(self, step: str | None = None) -> None:
        assert self.j is not None
        if step is not None:
            self.j.steps[step] = journal.now_stamp()
        self.j.updated_at = journal.now_stamp()
        self.jpath.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(self.jpath, mr.dumps(self.j), mode=0o600)

    def changed(self) -> bool:
        """This replacement changed the cluster (removed the member, or reset the node): its journal must stay."""
        return self.j is not None and bool(self.j.removed_id or self.j.done(mr.RESET))

    def load_journal(self) -> None:
        raw = read_state_file(self.jpath, "the member replacement journal")
        if raw is None:
            return
        j = mr.parse(raw, str(self.jpath))
        if j.target != self.target.private_ip:
            raise ReplaceRefused(
                f"a replacement of another member is half done: {j.target_name} ({j.target}), started {j.started_at} "
                f"(journal {self.jpath})",
                f"finish it first with `{spelling.command('replace-member', j.target_name)}`")
        self.j = j
        self.say(f"continuing the replacement of {j.target_name} started at {j.started_at} (steps done: "
                 f"{', '.join(j.steps) or 'none'}; journal {self.jpath})")

    # --- the loop ------------------------------------------------------------------------------------------------

    def run(self) -> int:
        self.load_journal()
        self.say(f"checking every control-plane node of cluster {self.r.cluster} ({len(self.nodes)} nodes; the lost one "
                 f"is {self.target.name}, {self.target.private_ip}) ...")
        waiting: tuple[str, float, float, str] | None = None  # phase, began, deadline, last shown
        while True:
            seen = self.look_all()
            self.report_join(seen)
            step = mr.plan(self.target, seen, self.j, self.opts)
            if step.action == mr.NODE_READY:
                ready = self.node_ready(seen)
                step = mr.Step(mr.DONE) if ready is None else mr.Step(mr.WAIT, ready, phase=NODE_READY_PHASE)
            if step.action == mr.WAIT:
                waiting = self.wait(step, seen, waiting)
                continue
            if waiting is not None:
                self.say(f"  done waiting ({timefmt.human_duration(time.monotonic() - waiting[1])})")
                waiting = None
            if step.action == mr.DONE:
                break
            self.act(step, seen)
        self.finish(seen)
        return 0

    def report_join(self, seen: list[mr.Seen]) -> None:
        """Say when the node's new member appears (a learner) and when it votes, once each."""
        removed = self.j.removed_id if self.j is not None else ""
        new = mr.new_member(self.target, seen, removed)
        if new is None or (not removed and not new.is_learner and self.joined is None):
            return  # none yet, or the node's old voting member (nothing removed): nothing joined
        state = "learner" if new.is_learner else "voter"
        if state == self.joined:
            return
        self.joined = state
        what = "joined as a learner" if state == "learner" else "is a voting member"
        self.say(f"{self.target.name} {what} (etcd member {mr.hex_id(new)})")

    def look_all(self) -> list[mr.Seen]:
        """Every node, the lost one first: Talos starts a joining node's etcd only after its MemberAddAsLearner was
        committed (services/etcd.go: buildInitialCluster, then the runner), so a member list read from the others
        after the lost node was seen running already lists the member it runs as. Read the other way round, a node
        that joined between the reads would look like a stale one that needs a reset."""
        first = look(self.target, self.talosctl(self.target))
        rest = {n.private_ip: look(n, self.talosctl(n)) for n in self.nodes if n != self.target}
        return [first if n == self.target else rest[n.private_ip] for n in self.nodes]

    def timeout_for(self, phase: str | None) -> float:
        a = self.args
        return {mr.SETTLE: a.settle_timeout, mr.REBUILT: a.rebuild_timeout,
                NODE_READY_PHASE: a.ready_timeout}.get(phase or "", a.join_timeout)

    def wait(self, step: mr.Step, seen: list[mr.Seen], waiting):
        now = time.monotonic()
        if waiting is None or waiting[0] != step.phase:
            timeout = self.timeout_for(step.phase)
            self.say(f"waiting {step.why} (up to {timefmt.human_duration(timeout)}) ...")
            waiting = (step.phase, now, now + timeout, "")
        phase, began, deadline, shown = waiting
        me = next(s for s in seen if s.node == self.target)
        line = f"{self.target.name} is {me.describe()}"
        if line != shown:
            self.say(f"  {timefmt.human_duration(now - began):>6}  {line}")
            waiting = (phase, began, deadline, line)
        if now >= deadline:
            raise Timeout(f"{self.target.name} did not get there within {timefmt.human_duration(deadline - began)}: "
                          f"waiting {step.why}",
                          f"look at `talosctl -n {self.target.private_ip} -e {endpoint_for(self.target, self.cfg.endpoints)} "
                          "service etcd` "
                          f"and `logs etcd`; run `{self.resume_cmd()}` again to keep waiting (it continues from "
                          f"{self.jpath})" if self.j else f"run `{self.resume_cmd()}` again when it has settled")
        time.sleep(min(self.args.poll_interval, max(deadline - now, 0.05)))
        return waiting

    def act(self, step: mr.Step, seen: list[mr.Seen]) -> None:
        a = step.action
        if a == mr.REFUSE:
            raise self.refusal(step, seen)
        if a == mr.CONFIRM:
            self.confirm(step, seen)
        elif a == mr.SAFETY_SNAPSHOT:
            self.safety_snapshot(seen)
        elif a == mr.REMOVE:
            self.remove(step, seen)
        elif a == mr.RESET:
            self.reset(step)
        elif a == mr.REBUILD:
            self.rebuild_instance()
        else:  # pragma: no cover - the plan has no other actions
            raise AssertionError(a)

    # --- the steps -----------------------------------------------------------------------------------------------

    def healthy(self, seen: list[mr.Seen]) -> ClusterNode:
        q = mr.quorum_of_others(self.target, seen)
        assert isinstance(q, mr.Quorum) and q.healthy
        return q.healthy[0]

    def new_journal(self, mode: str) -> None:
        if self.j is None:
            self.j = mr.RepairJournal(target=self.target.private_ip, target_name=self.target.name, mode=mode,
                                      started_at=journal.now_stamp())
        self.j.mode = mode

    def confirm(self, step: mr.Step, seen: list[mr.Seen]) -> None:
        ask(self.target, step, seen, self.healthy(seen), yes=self.args.yes, stdin=self.stdin, out=self.out,
            cluster=self.r.cluster, safety=not (self.opts.no_safety_snapshot or (self.j and self.j.safety_snapshot)))
        self.new_journal(step.mode)
        self.opts = mr.Options(confirmed=True, confirmed_mode=step.mode, safety_done=self.opts.safety_done,
                               no_safety_snapshot=self.opts.no_safety_snapshot, rebuild_said=self.opts.rebuild_said)

    def safety_snapshot(self, seen: list[mr.Seen]) -> None:
        from dr.commands.restore import steps

        node = self.healthy(seen)
        self.say(f"step: a safety snapshot of etcd from healthy member {node.name} ({node.private_ip}), before the "
                 "membership changes")
        self.opts = mr.Options(**{**self.opts.__dict__, "safety_done": True})
        path = steps.safety_snapshot(self.resolver_for(node), self.clock, self.out, self.err, PROG)
        if path is not None:
            assert self.j is not None
            self.j.safety_snapshot = str(path)
            self.save(mr.SAFETY_SNAPSHOT)

    def resolver_for(self, node: ClusterNode) -> Resolver:
        """The settings with ``node`` as the node every call names (the backup path asks ``r.talosctl()``)."""
        args = argparse.Namespace(**{**vars(self.args), "node": node.private_ip,
                                     "endpoint": endpoint_for(node, self.cfg.endpoints)})
        r = Resolver(args)
        r.__dict__["outputs"] = self.r.outputs  # already read: not a second Automation API call
        return r

    def remove(self, step: mr.Step, seen: list[mr.Seen]) -> None:
        assert step.member is not None and self.j is not None
        node = self.healthy(seen)
        t = self.talosctl(node)
        self.say(f"step: removing etcd member {mr.describe(step.member)} of {self.target.name}, asked of healthy member "
                 f"{node.name}: talosctl -n {t.node} -e {t.endpoint} etcd remove-member "
                 f"{mr.hex_id(step.member)}")
        self.j.removed_id = mr.hex_id(step.member)
        self.save()  # recorded before it is sent: a run stopped in between looks again and finds it gone or there
        gone = talosctl_etcd.remove_member(t, mr.parse_member_id(step.member.id))
        self.save(mr.REMOVE)
        q = mr.quorum_of_others(self.target, seen)
        left = (q.voters - 1) if isinstance(q, mr.Quorum) else 0
        self.say(f"  removed: {left} voting members left, all healthy (a quorum of {cluster_nodes.quorum(left)})"
                 if gone else "  it was no longer a member (removed already)")

    def reset(self, step: mr.Step) -> None:
        assert self.j is not None
        t = self.talosctl(self.target)
        assert t.node == self.target.private_ip  # the reset only ever goes to the lost node
        self.say(f"step: wiping EPHEMERAL (etcd's data) on {self.target.name} only: talosctl -n {t.node} -e "
                 f"{t.endpoint} reset --graceful=false --reboot --system-labels-to-wipe EPHEMERAL; it reboots and "
                 "rejoins empty through Talos's join loop")
        self.j.mode = mr.BY_RESET
        self.save(mr.RESET)  # before sending: never a second reset for this journal
        t.reset(["EPHEMERAL"])

    def rebuild_instance(self) -> None:
        stack = self.args.stack or os.environ.get(STACK_ENV) or keys.DEFAULT_STACK
        self.opts = mr.Options(**{**self.opts.__dict__, "rebuild_said": True})
        if self.j is not None and self.j.mode != mr.BY_PULUMI:
            self.j.mode = mr.BY_PULUMI
            self.save()
        t = self.target
        self.say("\n".join([
            f"step: rebuild {t.name}'s instance ({t.instance_id or 'its instance'}, {t.availability_zone or 'its zone'}"
            "). Run this now, in another terminal:",
            f"    cd {project_dir()} && pulumi up --refresh --stack {stack}",
            f"  --refresh finds the terminated instance; the preview should replace only {t.name}'s instance (same "
            f"private IP {t.private_ip}) and re-attach its Elastic IP {t.public_ip} and volumes. Check that, then "
            "answer yes there. The new machine gets its config from Pulumi and joins etcd on its own.",
            *([f"  {t.name} is the stack's bootstrap node: the preview does not replace `talos:machine:Bootstrap` "
               "(a three-node stack's bootstrap generation never changes, docs/DEPLOY.md), so the new machine is not "
               "bootstrapped beside the other two (siderolabs/talos#5500) and joins them."]
              if self.nodes and t == self.nodes[0] else []),
            f"  This command waits for it (up to {timefmt.human_duration(self.args.rebuild_timeout)}); stopped, it "
            f"continues with `{self.resume_cmd()}`.",
        ]))

    def node_ready(self, seen: list[mr.Seen]) -> str | None:
        """None when the node's Kubernetes Node is Ready, else what is missing."""
        from dr.adapters.kubeapi import KubeAPI, internal_ips, node_name

        node = self.healthy(seen)
        fd, name = tempfile.mkstemp(prefix=".kubeconfig-", dir=self.r.talos_dir)  # 0600 from the first byte
        os.close(fd)
        try:
            self.talosctl(node).kubeconfig(Path(name))
            text = Path(name).read_text()
        finally:
            Path(name).unlink(missing_ok=True)
        try:
            nodes = KubeAPI.from_kubeconfig(text).list_nodes()
        except (NodeUnreachable, NodeError) as exc:
            return f"for the Kubernetes API to answer ({exc.message})"
        mine = [n for n in nodes if self.target.private_ip in internal_ips(n)]
        if not mine:
            return f"for {self.target.name}'s kubelet to register its Kubernetes Node"
        for n in mine:
            conds = (n.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds if isinstance(c, dict)):
                self.say(f"Kubernetes Node {cli.printable(node_name(n))} ({self.target.private_ip}) is Ready")
                return None
        return f"for {self.target.name}'s Kubernetes Node to be Ready"

    def refusal(self, step: mr.Step, seen: list[mr.Seen]) -> DRError:
        shown = "; ".join(f"{s.node.name} {s.describe()}" for s in seen)
        done = (f" This replacement already removed member {self.j.removed_id} (journal {self.jpath})."
                if self.j is not None and self.j.removed_id else " Nothing was changed.")
        if step.refusal == mr.HEALTHY:
            return ReplaceRefused(f"nothing to replace: {step.why} (nodes: {shown}).{done}",
                                  "replace a member only when it is lost; `talos-dr status` shows each node")
        restore = spelling.command("restore", "latest")
        return ReplaceRefused(f"the replacement cannot proceed: {step.why}.{done}",
                              f"this is a lost quorum, not one lost member: restore from a snapshot with `{restore}` "
                              "(docs/RUNBOOK.md: Three control-plane nodes); or bring the other node back and run "
                              f"`{self.resume_cmd()}` again")

    def finish(self, seen: list[mr.Seen]) -> None:
        took = timefmt.human_duration(time.monotonic() - self.start)
        members = [m for s in seen if s.members for m in s.members][:len(self.nodes)]
        self.say("\n".join([
            "",
            f"member replacement complete: {self.target.name} ({self.target.private_ip}) is a voting etcd member again, "
            f"etcd is healthy on all {len(self.nodes)} nodes and its Kubernetes Node is Ready. This run took {took}.",
            "members: " + ", ".join(mr.describe(m) for m in members),
            *([f"the safety snapshot is kept in {self.j.safety_snapshot}"] if self.j and self.j.safety_snapshot else []),
            f"then take a fresh backup: {spelling.command('backup')} --save-to-s3",
        ]))
        self.jpath.unlink(missing_ok=True)


def ask(target: ClusterNode, step: mr.Step, seen: list[mr.Seen], source: ClusterNode, *, yes: bool, stdin: TextIO,
        out: TextIO, cluster: str, safety: bool) -> None:
    """Show every node's state and what will happen, and ask for yes (``--yes`` answers it)."""
    rows = [("node", "private IP", "Elastic IP", "now", "etcd member")]
    members = next((s.members for s in seen if s.members and s.node != target), ()) or ()
    for s in seen:
        m = mr.member_of(s.node, members)
        lost = " (lost)" if s.node == target and m is not None else ""
        rows.append((s.node.name, s.node.private_ip, s.node.public_ip, s.describe(),
                     (mr.describe(m) + lost) if m is not None else "not a member"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    table = ["  " + "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows]
    if step.mode == mr.BY_PULUMI:
        rebuild = (f"{target.name}'s instance is rebuilt by `pulumi up --refresh`, which you run when this command "
                   "says so (it prints the exact line); same private IP, an empty etcd")
    else:
        rebuild = (f"{target.name} answers, so its instance stays: its EPHEMERAL partition (etcd's data on it, "
                   "nothing else) is wiped with `talosctl reset --graceful=false --reboot "
                   "--system-labels-to-wipe EPHEMERAL`, and it reboots with an empty etcd")
    what = []
    if step.member is not None:
        if safety:
            what.append(f"a safety snapshot of etcd from healthy member {source.name}, kept in .talos/snapshots")
        what.append(f"etcd member {mr.hex_id(step.member)} is removed (asked of {source.name}); the others keep their "
                    "quorum and the cluster keeps running")
    what += [rebuild, "it joins as a learner, is promoted to a voter; then etcd healthy on every node and its "
                      "Kubernetes Node Ready are awaited"]
    lines = ["", f"About to replace the etcd member of {target.name} ({target.private_ip}) in cluster {cluster}, "
                 "without restoring any snapshot (no data goes back in time):", *table, "What happens:",
             *(f"  {i}. {w}" for i, w in enumerate(what, 1)),
             "No other node's data is touched: the healthy members only see etcd's member list change."]
    print("\n".join(cli.printable(line, limit=4000) for line in lines), file=out, flush=True)
    if yes:
        print("confirmed by --yes", file=out, flush=True)
        return
    if not getattr(stdin, "isatty", lambda: False)():
        raise NotConfirmed("member replacement not confirmed: there is no terminal to ask on (stdin is not a tty); "
                           "nothing was changed", "run it in a terminal and type yes, or pass --yes")
    print("Type yes to replace the member: ", end="", file=out, flush=True)
    answer = stdin.readline()
    if answer.strip() != "yes":
        typed = f"you typed {answer.strip()[:20]!r}, not 'yes'" if answer else "no answer (end of input)"
        raise NotConfirmed(f"member replacement not confirmed ({typed}); nothing was changed",
                           "run it again and type yes to proceed")


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(PROG, "Replace one lost control-plane member while the other two keep a quorum, without a "
                         "snapshot restore: checks the others, asks you to type yes, takes a safety snapshot, removes "
                         "the lost member, has its node rebuilt and watches it join. Continues where it stopped when "
                         "run again.", examples=(
                             f"{PROG} cp-3                 # the node's name, as `talos-dr status` shows it",
                             f"{PROG} 10.0.3.5 --yes       # or its private IP; no prompt",
                         ))
    p.add_argument("target", metavar="NODE", help="the lost node: its name or private IP (stack output "
                                                  f"{keys.CONTROL_PLANE_NODES})")
    p.add_argument("--yes", action="store_true", help="do not ask; needed when there is no terminal")
    p.add_argument("--no-safety-snapshot", action="store_true",
                   help="do not snapshot etcd from a healthy member first (default: take one, best effort)")
    p.add_argument("--settle-timeout", type=cli.parse_duration, default=300.0, metavar="DURATION",
                   help="how long to wait for a booting node to settle before anything changes (default 5m)")
    p.add_argument("--rebuild-timeout", type=cli.parse_duration, default=2700.0, metavar="DURATION",
                   help="how long to wait for the rebuilt or reset node to answer and start etcd (default 45m)")
    p.add_argument("--join-timeout", type=cli.parse_duration, default=900.0, metavar="DURATION",
                   help="how long to wait for it to join, be promoted and be healthy (default 15m; Talos retries "
                        "the promotion for 10m)")
    p.add_argument("--ready-timeout", type=cli.parse_duration, default=600.0, metavar="DURATION",
                   help="how long to wait for its Kubernetes Node to be Ready (default 10m)")
    p.add_argument("--poll-interval", type=cli.parse_duration, default=2.0, metavar="DURATION",
                   help="how often to ask the nodes while waiting (default 2s)")
    p.add_argument("--wait-lock", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for a running backup or restore to finish (default: fail at once)")
    add_common_flags(p)
    return p


def run(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO, clock: Callable[[], datetime]) -> int:
    r = Resolver(args)
    nodes = cluster_nodes.from_outputs(r.outputs.values)
    if not nodes:
        raise ConfigError(f"the stack outputs name no control-plane node ({keys.CONTROL_PLANE_NODES})",
                          "run `pulumi up` so the stack exports them, or pass --outputs-file")
    target = mr.find_target(nodes, args.target)
    if len(nodes) not in cluster_nodes.ALLOWED_COUNTS or len(nodes) < 3:
        raise ReplaceRefused(f"cluster {r.cluster} has {len(nodes)} control-plane node(s): a lost member is a lost "
                             "cluster; nothing was changed",
                             f"restore it from a snapshot with `{spelling.command('restore', 'latest')}`")
    restore_journal = journal.path_for(r.talos_dir)
    if restore_journal.exists():
        raise ReplaceRefused(f"a restore is half done (journal {restore_journal}); nothing was changed",
                             f"finish it first with `{spelling.command('restore')}` (the same command you started)")
    cfg = r.talosconfig
    if not cfg.has_credentials:
        raise ConfigError(f"talosconfig {cfg.path} (context {cfg.context}) has no client certificate",
                          f"a member replacement needs the admin talosconfig: stack output {keys.TALOSCONFIG}")
    from dr.adapters.talosapi import check_client_certificate
    from dr.adapters.talosctl import talosconfig_credentials

    check_client_certificate(talosconfig_credentials(cfg).cert_pem, now=clock())
    r.talosctl().binary  # noqa: B018 - fails early when talosctl is missing
    ensure_snapshots_dir(r.snapshots_dir)
    with exclusive(r.talos_dir / LOCK_NAME, "a member replacement", wait=args.wait_lock):
        job = Replace(args, r, nodes, target, out, err, stdin, clock)
        try:
            return job.run()
        except KeyboardInterrupt:
            if job.j is not None and job.changed():
                print(f"\n{PROG}: interrupted after {', '.join(job.j.steps)}; run `{job.resume_cmd()}` again to "
                      f"continue (journal {job.jpath})", file=err)
            else:
                job.jpath.unlink(missing_ok=True)
                print(f"\n{PROG}: interrupted before anything changed; nothing was changed", file=err)
            return int(ExitCode.INTERRUPTED)
        except DRError as exc:
            if job.j is not None and not job.changed():
                job.jpath.unlink(missing_ok=True)
            elif job.j is not None and "again" not in str(exc):
                exc.hint = (exc.hint + "; then " if exc.hint else "") + (
                    f"run `{job.resume_cmd()}` again to continue (journal {job.jpath})")
            raise


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None,
         stdin: TextIO | None = None, now: Callable[[], datetime] | None = None) -> int:
    args = build_parser().parse_args(argv)
    clock = now or (lambda: datetime.now(UTC))
    return cli.execute(PROG, args, lambda o, e: run(args, o, e, stdin if stdin is not None else sys.stdin, clock),
                       out=out, err=err)

