"""`talos-dr restore` on a three-node control plane (stack output ``controlPlaneNodes`` names more than one node).

Every node is probed first (reachable? stage, etcd's service state, machine type, its etcd's member list); the pure
``dr.core.ha_plan`` says what is broken and what to do next. With etcd's quorum intact nothing is restored: the
cluster's data is current, and the lost member is replaced (`talos-dr replace-member NODE`), unless --rollback asks
for a point-in-time rollback of a working cluster. With quorum lost, Talos's documented recovery
(website/content/v1.11/advanced/disaster-recovery.md, siderolabs/talos v1.11.0) with guard rails: the snapshot proved
first (as `talos-dr verify` proves it), every node's machine type checked (`init` refused), a safety snapshot from a
member that still answers (etcd serves a snapshot without a leader), one typed `yes` after a per-node table, a reset
(EPHEMERAL only) of every node that holds data, every etcd waiting in Preparing, `bootstrap --recover-from` on exactly
one node (recorded in the journal before the call; never another), the others join by themselves (Talos's join loop,
services/etcd.go at v1.13.9) and become voting members, stale Node objects, health across all, the kubeconfig.

Each node is a ``Talosctl`` of its own: it dials the node's Elastic IP and names its private IP.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TextIO

from dr.adapters import journal_file
from dr.adapters.talosctl import Talosctl
from dr.commands import cli
from dr.commands.restore import prompt, steps, undo
from dr.commands.restore.command import PROG, Restore
from dr.commands.restore.probe import probe
from dr.commands.settings import Resolver
from dr.core import ha_plan as ha
from dr.core import journal, spelling, timefmt
from dr.core import restore_plan as pl
from dr.core.cluster_nodes import ClusterNode, quorum
from dr.core.errors import (
    ConfigError,
    DRError,
    HaRestoreRefused,
    NodeError,
    NodeUnreachable,
    QuorumIntact,
    RestoreConflict,
    Timeout,
)
from dr.core.node_state import ETCD_RUNNING, MAINTENANCE, REFUSED, UNREACHABLE

REPLACE_MEMBER = "replace-member"  # the ha-repair command's name (issue 24): `talos-dr replace-member NODE`
WIPE = ("EPHEMERAL",)  # never STATE: the node keeps its machine config and boots straight back into the cluster


def node_table(views: Sequence[ha.NodeView], j: journal.Journal | None = None) -> list[str]:
    """One line per node: name, addresses, reachable, stage, etcd, voter, machine type (and the journal's steps)."""
    rows = [("NODE", "PRIVATE IP", "PUBLIC IP", "REACHABLE", "STAGE", "ETCD", "VOTER", "TYPE", "THIS RESTORE")]
    for v in views:
        voter = v.voter()
        done = [k.split("@", 1)[0] for k in (j.steps if j else {}) if k.endswith("@" + v.ip)]
        if j is not None and j.bootstrap_target == v.ip:
            done.append("bootstrap target")
        etcd = v.state.etcd or ("-" if v.kind in (UNREACHABLE, MAINTENANCE) else "?")
        if v.state.etcd_since is not None and v.state.etcd:
            etcd += f" {int(v.state.etcd_since)}s"
        rows.append((v.node.name, v.ip, v.node.public_ip, "no" if v.kind == UNREACHABLE else "yes",
                     v.state.stage if v.kind != REFUSED else "refuses us", etcd,
                     "?" if voter is None else ("yes" if voter else "no"), v.machine_type or "?",
                     ", ".join(done) or "-"))
    widths = [max(len(cli.printable(str(r[i]), limit=60)) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cli.printable(str(c), limit=60).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def one_line(views: Sequence[ha.NodeView]) -> str:
    return " | ".join(f"{v.node.name}: {v.state.describe()}" for v in views)


# Why a node that was down must never come back with its old disk: Talos recovers with etcdutl's snapshot.Restore given
# only the name, data dir and peer URLs (v1.13.9 services/etcd.go recoverFromSnapshot: no InitialClusterToken, so
# etcd's default), and every Talos cluster was bootstrapped as one member on one node: the member ID (from the peer
# URLs and token) and the cluster ID (from the member IDs) come out as they were. The old members accept the restored
# one as theirs. On the three-node sandbox (real etcd) the restored member panics in UpdateAttributes when two old
# members come back with their data, and its cluster and member IDs are the old ones.
OLD_DISK = ("its etcd would start from the old data under the same member and cluster IDs (Talos bootstraps every "
            "cluster on one node, so a restore on that node gets the cluster ID it had) and can overwrite or crash the "
            "restored member (seen on the three-node sandbox: the restored etcd panics)")


def bring_back(v: ha.NodeView, t: Talosctl) -> str:
    """How a node the restored cluster does not include comes back: it joins by itself once its etcd is empty."""
    wipe = (f"talosctl -n {v.ip} -e {t.endpoint} reset --graceful=false --reboot "
            "--system-labels-to-wipe EPHEMERAL")
    if v.kind == UNREACHABLE:
        return (f"  {v.node.name} ({v.ip}) is down. Do NOT start it with its old disk: {OLD_DISK}. Terminate the "
                "instance and rebuild it with `pulumi up --refresh` (same private IP, empty etcd); it joins the "
                f"restored cluster by itself (watch `talosctl -n {v.ip} -e {t.endpoint} etcd members`). If it comes "
                f"back by itself anyway, wipe its etcd at once: `{wipe}`")
    if v.kind == MAINTENANCE:
        return (f"  {v.node.name} ({v.ip}) is in maintenance mode (no machine config): `pulumi up --refresh` "
                "configures it; it then joins the restored cluster by itself")
    return (f"  {v.node.name} ({v.ip}) is up but not a voting member of the restored cluster ({v.state.describe()}): "
            f"if its etcd holds data of its own, wipe it NOW ({OLD_DISK}): `{wipe}`; it then joins by itself")


def endpoint_of(n: ClusterNode, r: Resolver) -> str:
    """What to dial for node ``n``: its Elastic IP, as the talosconfig spells it when it lists it (with a port, when
    apid does not listen on 50000), else the bare Elastic IP (talosctl adds :50000)."""
    from dr.commands.backup import split_endpoint

    try:
        listed = r.talosconfig.endpoints
    except DRError:
        listed = ()
    for e in listed:
        try:
            if split_endpoint(e)[0] == n.public_ip:
                return e
        except (DRError, ValueError):
            continue
    return n.public_ip


class HaRestore(Restore):
    """The restore loop over every control-plane node: probe all, plan, act on one, until done."""

    def __init__(self, args, r: Resolver, t: Talosctl, controlplane: str, out: TextIO, err: TextIO, stdin, clock,
                 nodes: Sequence[ClusterNode]):
        super().__init__(args, r, t, controlplane, out, err, stdin, clock)
        self.nodes = list(nodes)
        ctx = r._flag("talos_context")
        self.ts = {n.private_ip: Talosctl(n.private_ip, t.talosconfig, binary=t._binary, endpoint=endpoint_of(n, r),
                                          context=ctx, cert_fingerprints=t.cert_fingerprints) for n in nodes}
        self.machine_types: dict[str, str] = {}
        self.confirmed_nodes: frozenset[str] = frozenset()
        self.resent = False
        self.started_over: set[str] = set()
        self.views: list[ha.NodeView] = []

    # --- probing ------------------------------------------------------------------------------------------

    def view_of(self, n: ClusterNode) -> ha.NodeView:
        t = self.ts[n.private_ip]
        st = probe(t)
        mtype = self.machine_types.get(n.private_ip)
        if mtype is None and st.kind not in (UNREACHABLE, MAINTENANCE, REFUSED):
            try:
                mtype = t.machine_type() or None
            except DRError:
                mtype = None
            if mtype:
                self.machine_types[n.private_ip] = mtype
        members = None
        if st.kind == ETCD_RUNNING:
            try:
                members = tuple(t.etcd_members())
            except DRError:
                members = None  # no quorum, or etcd not answering yet
        return ha.NodeView(n, st, mtype, members)

    def probe_all(self) -> list[ha.NodeView]:
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            self.views = list(pool.map(self.view_of, self.nodes))
        return self.views

    def view(self, ip: str | None) -> ha.NodeView:
        return next(v for v in self.views if v.ip == ip)

    def tn(self, ip: str | None) -> Talosctl:
        assert ip is not None
        return self.ts[ip]

    def for_node(self, ip: str) -> Resolver:
        """The settings with this node as the one to talk to (for the safety snapshot and the live diff)."""
        r = copy.copy(self.r)
        r.__dict__["node"] = ip
        r.__dict__["endpoint"] = self.tn(ip).endpoint
        return r

    def options(self) -> ha.Options:  # type: ignore[override]
        return ha.Options(confirmed=self.confirmed_nodes, no_safety_snapshot=self.args.no_safety_snapshot,
                          safety_done=self.safety_done, rollback=self.args.rollback,
                          abandoned_past_reset=self.abandoned_past_reset, preparing_long=self.args.preparing_long,
                          resent=self.resent)

    def ha_timeout(self, phase: str | None) -> float:
        if phase == ha.RESET_BEGIN:
            return min(pl.RESET_BEGIN_GRACE, self.args.reboot_timeout)
        if phase == ha.RECOVERY:
            return self.args.bootstrap_timeout
        if phase == ha.JOIN:
            return self.args.join_timeout
        return self.args.reboot_timeout

    # --- the loop -----------------------------------------------------------------------------------------

    def _run(self, fetched) -> int:
        self.proof = self.prove(fetched)
        self.status = self.proof.status
        self.j = self.previous_journal(fetched)
        if self.j is not None:
            self.say(f"continuing the three-node restore of {self.j.snapshot_origin} started at {self.j.started_at} "
                     f"(last step done: {self.j.last_step}; bootstrap node: {self.target_name() or 'not chosen yet'}"
                     f"; journal {self.jpath})")
        waiting: tuple[str | None, str | None, float, float, str] | None = None
        while True:
            views = self.probe_all()
            step = ha.plan(views, self.j, self.options(), self.clock())
            if step.action == ha.WAIT:
                now = time.monotonic()
                if waiting is None or waiting[:2] != (step.phase, step.node):
                    timeout = self.ha_timeout(step.phase)
                    waiting = (step.phase, step.node, now, now + timeout, "")
                    name = self.view(step.node).node.name if step.node else "the nodes"
                    self.say(f"waiting for node {name} {step.why} (up to {timefmt.human_duration(timeout)}) ...")
                phase, node, began, deadline, shown = waiting
                line = one_line(views)
                if line != shown:
                    self.say(f"  {timefmt.human_duration(now - began):>6}  {line}")
                    waiting = (phase, node, began, deadline, line)
                if now >= deadline and phase == ha.RESET_BEGIN:
                    # The recorded reset never showed on the node (the run died between recording and sending it):
                    # nothing was destroyed there; it is reset again (this run confirmed it, or asks again).
                    self.start_over(step.node)
                    waiting = None
                    continue
                if now >= deadline:
                    raise self.wait_timeout(step, deadline - began)
                time.sleep(min(self.args.poll_interval, max(deadline - now, 0.05)))
                continue
            waiting = None
            if step.action == ha.DONE:
                break
            self.act_ha(step)
        self.finish()
        return 0

    def act_ha(self, step: ha.Step) -> None:
        a = step.action
        if a in (ha.REFUSE, ha.REFUSE_QUORUM_INTACT, ha.REFUSE_INIT, ha.REFUSE_SPLIT):
            raise self.refusal(step)
        if a == ha.CONFIRM:
            self.confirm_ha(step)
        elif a == ha.SAFETY_SNAPSHOT:
            self.safety_done = True
            assert step.node is not None and self.j is not None
            path = steps.safety_snapshot(self.for_node(step.node), self.clock, self.out, self.err, PROG)
            if path is not None:
                self.j.safety_snapshot = str(path)
                self.mark(journal.SAFETY_SNAPSHOT)
        elif a == ha.RESET:
            self.reset_node(step.node)
        elif a == ha.START_OVER:
            self.start_over(step.node)
        elif a == ha.CHOOSE_TARGET:
            assert self.j is not None and step.node is not None
            self.j.bootstrap_target = step.node
            self.mark(journal.BOOTSTRAP_TARGET)  # saved with the target, before any bootstrap call
            v = self.view(step.node)
            self.say(f"bootstrap node: {v.node.name} ({v.ip}), recorded in {self.jpath}; no other node is ever "
                     "bootstrapped by this restore")
        elif a == ha.BOOTSTRAP:
            self.bootstrap_target(step)
        elif a == ha.RECOVERY_FAILED:
            raise steps.recovery_failed(self.tn(step.node), step.why, self.j, self.resume_cmd())
        elif a == ha.RECOVERED:
            self.mark(journal.BOOTSTRAPPED)
            self.say(f"etcd on node {self.view(step.node).node.name} runs from the snapshot; the others now join it")
        elif a == ha.JOINED:
            assert step.node is not None
            self.mark(journal.on(journal.JOINED, step.node))
            self.say(f"node {self.view(step.node).node.name} ({step.node}) joined: a voting member of the restored "
                     "cluster")
        elif a == ha.HEALTH:
            self.health_all()
        elif a == ha.KUBECONFIG:
            assert self.j is not None
            path = steps.kubeconfig(self.tn(self.j.bootstrap_target), self.r.talos_dir)
            self.mark(journal.KUBECONFIG)
            self.say(f"wrote {path} (0600)")
        else:  # pragma: no cover - every action is handled above
            raise AssertionError(f"unhandled restore step {a}")

    # --- the actions --------------------------------------------------------------------------------------

    def confirm_ha(self, step: ha.Step) -> None:
        assert self.fetched is not None
        views = self.views
        health = ha.classify(views)
        up = [v for v in views if v.up]
        down = [v for v in views if not v.up]
        if step.safety:
            steps.check_disk(self.r.snapshots_dir, self.fetched.digest.size)
        lines = ["  nodes:", *node_table(views, self.j)]
        if step.rollback:
            lines += [f"  WARNING: etcd's quorum is INTACT ({len(health.serving)} of {health.voters} voting members "
                      "run): the cluster works and its data is current. --rollback throws away everything written",
                      "  since the snapshot on a WORKING cluster; to replace a lost member instead, stop here and run "
                      f"`{spelling.command(REPLACE_MEMBER, 'NODE')}`."]
        else:
            lines.append(f"  quorum    LOST: {len(health.serving)} of {health.voters} voting members run, "
                         f"{quorum(health.voters)} are needed")
        reset = [self.view(ip).node.name for ip in step.needs_reset]
        lines.append(f"  plan      reset (wipe EPHEMERAL: etcd's data; the machine config stays) "
                     f"{', '.join(reset) or 'no node (every etcd that answers is empty)'}; then `bootstrap "
                     f"--recover-from` on exactly one node ({self.first_up_name(up)}); the others join it")
        for v in down:
            lines.append(f"  {v.node.name} is {v.state.describe()}: not touched. Do not start it again with its old "
                         "disk while or after this restore runs (the end of the run says how to bring it back: it "
                         "joins by itself once its etcd is empty)")
        running = next((v for v in views if v.kind == ETCD_RUNNING), None)
        if step.needs_reset and running is not None:
            lines += undo.what_it_undoes(self.for_node(running.ip), self.fetched, self.err, ETCD_RUNNING)
        elif step.needs_reset:
            lines += undo.what_it_undoes(self.r, self.fetched, self.err, views[0].kind)
        names = ", ".join(v.node.name for v in views)
        prompt.confirm(fetched=self.fetched, status=self.status, proof=self.proof, cluster=self.r.cluster,
                       data_dir_copy=self.args.from_data_dir_copy, node=f"{names} ({len(views)} control-plane nodes)",
                       node_state=health.kind, needs_reset=bool(step.needs_reset), safety=step.safety,
                       wipe_state=False, snapshots_dir=str(self.r.snapshots_dir), yes=self.args.yes,
                       now=self.clock(), out=self.out, stdin=self.stdin, undoes=lines, nodes_reset=reset)
        self.confirmed_nodes = frozenset(v.ip for v in up)
        if self.j is None:
            f = self.fetched
            self.j = journal.Journal(spec=f.origin, snapshot_path=str(f.path),
                                     snapshot_sha256=f.digest.content_sha256, snapshot_origin=f.origin,
                                     node=self.t.node, cluster=self.r.cluster, flags=self.flags)
        self.confirmed = True
        self.mark(journal.CONFIRMED)

    def target_name(self) -> str | None:
        ip = self.j.bootstrap_target if self.j is not None else None
        name = next((n.name for n in self.nodes if n.private_ip == ip), None)
        return f"{name} ({ip})" if ip else None

    def first_up_name(self, up: Sequence[ha.NodeView]) -> str:
        if self.j is not None and self.j.bootstrap_target:
            return self.view(self.j.bootstrap_target).node.name
        return up[0].node.name if up else "none answers"

    def reset_node(self, ip: str | None) -> None:
        assert ip is not None and self.j is not None
        t = self.tn(ip)
        self.say(f"resetting node {self.view(ip).node.name} at {t.where}: wiping EPHEMERAL (etcd's data); STATE (the "
                 "machine config) is kept, then reboot")
        key = journal.on(journal.RESET, ip)
        self.mark(key)  # before the call: a Ctrl-C while talosctl runs may leave the node reset
        try:
            t.reset(WIPE)
        except (NodeError, NodeUnreachable, ConfigError) as exc:
            if isinstance(exc, NodeUnreachable) and "connection refused" not in exc.message.lower():
                raise  # a dropped connection may follow a reset that happened: keep the record
            self.unmark(key)
            raise type(exc)(f"{exc.message}; node {ip} was not reset", exc.hint) from exc

    def start_over(self, ip: str | None) -> None:
        assert ip is not None and self.j is not None
        name = self.view(ip).node.name
        if ip in self.started_over:
            raise NodeError(f"node {name} ({ip}) still runs etcd with data after this restore reset it twice",
                            f"look at `talosctl -n {ip} -e {self.tn(ip).endpoint} service etcd` and `dmesg`; then "
                            f"run `{self.resume_cmd()}` again")
        self.started_over.add(ip)
        self.say(f"node {name} runs etcd with data although this restore recorded its reset at "
                 f"{self.j.steps.get(journal.on(journal.RESET, ip))} (the reset never reached it); resetting it again")
        self.j.steps.pop(journal.on(journal.RESET, ip), None)
        journal_file.save(self.jpath, self.j)

    def bootstrap_target(self, step: ha.Step) -> None:
        assert self.j is not None and self.fetched is not None and step.node == self.j.bootstrap_target
        t = self.tn(step.node)
        resend = self.j.done(journal.BOOTSTRAP_STARTED)
        if resend:
            self.resent = True
            self.say(f"node {self.view(step.node).node.name}: {step.why}; sending it again (to the recorded node "
                     "only: a node refuses a bootstrap once its etcd data directory holds anything)")
        self.mark(journal.BOOTSTRAP_STARTED)
        try:
            steps.bootstrap(t, self.upload_path or self.fetched.path, self.args.bootstrap_timeout,
                            self.args.poll_interval, self.out, self.resume_cmd())
        except steps.NotStarted as refused:
            if resend and isinstance(refused.error, RestoreConflict):
                self.say("the node already holds etcd data: the earlier bootstrap did arrive; waiting for it")
                return
            if not resend:
                self.unmark(journal.BOOTSTRAP_STARTED)  # refused before it began: nothing of it is in etcd
            raise refused.error from None
        self.say(f"bootstrap accepted by node {self.view(step.node).node.name} at {t.where}; it checks the snapshot "
                 "and starts etcd from it")

    def health_all(self) -> None:
        assert self.j is not None
        t = self.tn(self.j.bootstrap_target)
        addresses = {a for n in self.nodes for a in (n.private_ip, n.public_ip)}
        steps.remove_stale_nodes(t, self.r.talos_dir, addresses, self.args.health_timeout, self.args.poll_interval,
                                 self.out, self.err, PROG)
        target = self.view(self.j.bootstrap_target)
        members = target.members or ()
        voters = [v.ip for v in self.views if (m := ha.member_of(v.node, members)) is not None and not m.is_learner]
        missing = [v for v in self.views if v.ip not in voters]
        if missing:
            # `talosctl health` wants every Kubernetes node ready and no node it was not told of (talos v1.13.9
            # pkg/cluster/check/kubernetes.go): with a node down it cannot pass. etcd's part is proved here already
            # (the target's member list answers, which needs a leader, and lists every node that is up as a voter).
            names = ", ".join(v.node.name for v in missing)
            self.say(f"etcd runs with {len(voters)} voting member(s) and a leader; not waiting for `talosctl health`: "
                     f"it cannot pass while {names} {'is' if len(missing) == 1 else 'are'} not back (the end of this "
                     f"run says how); then check with `talosctl -n {t.node} -e {t.endpoint} health "
                     f"--control-plane-nodes {','.join(n.private_ip for n in self.nodes)}`")
            steps.warn_alarms(t, self.err, PROG)
            self.mark(journal.HEALTHY)
            return
        timeout = self.args.health_timeout
        self.say(f"waiting for the cluster to be healthy (talosctl health --control-plane-nodes {','.join(voters)}, "
                 f"up to {timefmt.human_duration(timeout)}) ...")
        try:
            t.health(wait_timeout=f"{max(int(timeout), 1)}s", timeout=timeout + 60, control_plane_nodes=voters)
        except DRError as exc:
            raise Timeout(f"the restored cluster did not become healthy within {timefmt.human_duration(timeout)} "
                          f"({exc.message})",
                          f"look at `talosctl -n {t.node} -e {t.endpoint} health`; once healthy, run "
                          f"`{self.resume_cmd()}` again to finish (or give it longer with --health-timeout)") from exc
        steps.warn_alarms(t, self.err, PROG)
        self.mark(journal.HEALTHY)

    # --- refusals and timeouts ----------------------------------------------------------------------------

    def refusal(self, step: ha.Step) -> DRError:
        table = "\n".join(node_table(self.views, self.j))
        nothing = "" if self.j is not None and self.j.past_point_of_no_return else "; nothing was changed"
        v = self.view(step.node) if step.node and any(x.ip == step.node for x in self.views) else None
        if step.action == ha.REFUSE_QUORUM_INTACT:
            return self.quorum_intact(step, table, nothing)
        if step.action == ha.REFUSE_INIT:
            assert v is not None
            self.say(f"nodes:\n{table}")
            return HaRestoreRefused(
                f"node {v.node.name} ({v.ip}) is of machine type {v.machine_type}, which cannot take part in an etcd "
                f"recovery (Talos's disaster-recovery guide: every control-plane node must be controlplane){nothing}",
                f"make it a controlplane node: `talosctl -n {v.ip} -e {v.node.public_ip} edit mc --mode=staged` (set "
                f"machine.type: controlplane), then `talosctl -n {v.ip} -e {v.node.public_ip} reboot`; then run "
                f"`{self.resume_cmd()}` again")
        if step.action == ha.REFUSE_SPLIT:
            self.say(f"nodes:\n{table}")
            others = ", ".join(self.view(ip).node.name for ip in step.others) or "-"
            return HaRestoreRefused(
                f"not bootstrapping {v.node.name if v else step.node}: {step.why} (in the way: {others}); a bootstrap "
                "now could make a second etcd cluster (siderolabs/talos#5500)",
                "look at each node's `talosctl -n IP -e EIP service etcd` and `etcd members`; wipe a node whose etcd "
                "runs with data of its own (`talosctl -n IP -e EIP reset --graceful=false --reboot "
                f"--system-labels-to-wipe EPHEMERAL`), then run `{self.resume_cmd()}` again")
        if v is not None and v.kind == REFUSED:
            return self.refuse(v.state)
        return NodeUnreachable(f"no control-plane node answers on port 50000 ({one_line(self.views)}){nothing}",
                               "check the instances run and the security group admits your IP; a terminated "
                               "instance is rebuilt by `pulumi up --refresh`")

    def quorum_intact(self, step: ha.Step, table: str, nothing: str) -> DRError:
        health = ha.classify(self.views)
        lost = [x for x in self.views if x.node.name in health.lost]
        silent = [x.node.name for x in lost if x.kind == UNREACHABLE]
        self.say(f"nodes:\n{table}")
        rerun = spelling.command("restore", self.fetched.origin if self.fetched else "SNAPSHOT", *self.flags)
        if step.node is not None and self.j is not None:
            # Our reset node joined a cluster with a leader: the restore has nothing left to do; its journal goes.
            journal_file.remove(self.jpath)
            self.j = None
            return QuorumIntact(
                f"node {self.view(step.node).node.name}, reset by this restore, joined an etcd cluster that has a "
                f"leader: the other members run after all (the Talos API of {', '.join(silent) or 'some node'} does "
                "not answer from here, their etcd does); nothing is restored and the restore's journal is removed",
                "check the network path to those nodes (security group, your IP); the cluster's data is current")
        what = f"etcd has a leader ({len(health.serving)} of {health.voters} voting members answer here)"
        if lost:
            what += f"; not answering: {', '.join(f'{x.node.name} ({x.ip})' for x in lost)}"
        hint = ""
        if silent:
            hint = (f"the Talos API of {', '.join(silent)} does not answer from here, but their etcd may still run "
                    "(check the instances and the security group first); ")
        replace = "; ".join(f"`{spelling.command(REPLACE_MEMBER, x.node.name)}`" for x in lost)
        hint += (f"replace a lost member with {replace} (it removes the dead member and rebuilds the node, which "
                 "joins by itself); " if lost else "the cluster is healthy; ")
        return QuorumIntact(
            f"etcd's quorum is intact ({what}): the cluster's data is current, so no snapshot is restored{nothing}",
            hint + f"only for a point-in-time rollback of this working cluster, run `{rerun} --rollback`")

    def wait_timeout(self, step: ha.Step, waited: float) -> DRError:
        v = self.view(step.node) if step.node else None
        name = f"{v.node.name} ({v.ip})" if v else "the nodes"
        extra = ""
        if self.j is not None and step.node == self.j.bootstrap_target:
            extra = ("; this restore bootstraps only that node, never another: if its instance is terminated, "
                     "`pulumi up --refresh` rebuilds it (same private IP) and this restore goes on with it")
        return Timeout(f"gave up waiting for node {name} {step.why} after {timefmt.human_duration(waited)} "
                       f"(now: {one_line(self.views)})",
                       f"look at `talosctl -n {v.ip if v else 'IP'} -e {v.node.public_ip if v else 'EIP'} service etcd`"
                       f"{extra}; then run `{self.resume_cmd()}` again (it continues from the journal)")

    # --- the end ------------------------------------------------------------------------------------------

    def summary(self) -> dict:
        out = super().summary()
        assert self.j is not None
        out["bootstrap_node"] = self.j.bootstrap_target
        out["nodes"] = [{"name": v.node.name, "private_ip": v.ip, "state": v.state.describe(), "voter": v.voter()}
                        for v in self.views]
        return out

    def finish(self) -> None:
        assert self.j is not None and self.fetched is not None
        views = self.probe_all()
        target = self.view(self.j.bootstrap_target)
        members = target.members or ()
        voters = sum(1 for m in members if not m.is_learner)
        took = timefmt.human_duration(time.monotonic() - self.start)
        lines = ["", f"restore complete: cluster {self.r.cluster} runs etcd from {self.fetched.path.name} with "
                     f"{voters} voting member(s); bootstrapped on {target.node.name} ({target.ip}) only.",
                 f"this run took {took} (the restore started at {self.j.started_at}).", "nodes:",
                 *node_table(views, self.j)]
        strays = ha.strays(views, self.j.bootstrap_target)
        if strays:
            lines.append("not (yet) in the restored cluster:")
            lines += [bring_back(v, self.tn(v.ip)) for v in strays]
        if self.j.safety_snapshot:
            lines.append(f"the etcd it replaced is kept in {self.j.safety_snapshot}")
        lines += ["check it:", f"  export KUBECONFIG={self.r.talos_dir / 'kubeconfig'}", "  kubectl get nodes",
                  "  kubectl get pods -A",
                  f"  talosctl --talosconfig {self.r.talosconfig_path} -e {self.tn(target.ip).endpoint} -n {target.ip} etcd "
                  "members",
                  f"then take a fresh backup: {spelling.command('backup')} --save-to-s3"]
        self.say("\n".join(lines))
        journal_file.remove(self.jpath)
