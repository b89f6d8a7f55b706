"""`talos-dr restore` on three nodes, in-process, against a small model of three Talos nodes behind the adapter
(``Talosctl``'s methods): what each node answers follows the Talos behaviour ``dr.core.ha_plan`` cites (an EPHEMERAL
reset leaves etcd in Preparing with an empty data directory; bootstrap refuses a non-empty one; an empty node joins
the cluster a running member leads). The three-node sandbox tests (test_ha_restore.py) run the same command against
real etcd members; these cover the command's own decisions: the exit codes, the per-node prompt, every step recorded
before it is taken, an interruption at each of them, and what a resume does."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest

from dr.adapters import journal_file
from dr.adapters.talosctl import ServiceEvent, ServiceStatus, Talosctl
from dr.commands import restore
from dr.commands.restore import command, steps, undo
from dr.commands.restore import ha as ha_cmd
from dr.core import journal
from dr.core import outputs as keys
from dr.core.errors import ExitCode, NodeError, NodeUnreachable
from dr.core.ha_plan import Member
from tests.support.tools import run_cli

FAST = ("--poll-interval", "0.01", "--reboot-timeout", "2s", "--bootstrap-timeout", "2s", "--health-timeout", "2s",
        "--join-timeout", "2s", "--preparing-long", "0.5", "--no-revision-bump")
IPS = ("10.0.1.5", "10.0.2.5", "10.0.3.5")
EIPS = ("127.0.0.3", "127.0.0.5", "127.0.0.7")


class FakeNode:
    def __init__(self, i: int):
        self.name, self.ip, self.eip = f"cp-{i}", IPS[i - 1], EIPS[i - 1]
        self.up = True
        self.mtype = "controlplane"
        self.data = "old"  # old | empty | new
        self.etcd = "Running"
        self.learner = False
        self.member_id = f"{i:016x}"


class FakeCluster:
    """Three nodes; ``calls`` records every destructive call in order: ("reset"|"bootstrap", ip)."""

    def __init__(self):
        self.nodes = {n.ip: n for n in (FakeNode(1), FakeNode(2), FakeNode(3))}
        self.calls: list[tuple[str, str]] = []
        self.new_id = 100

    def node(self, t: Talosctl) -> FakeNode:
        n = self.nodes[t.node]
        if not n.up:
            raise NodeUnreachable(f"node {t.node} does not answer on port 50000 (connection refused)")
        return n

    def tick(self) -> None:
        """Talos's join loop: an empty node joins as a learner once a member of the new cluster runs, and is
        promoted on the next look."""
        leader = any(n.up and n.data == "new" and n.etcd == "Running" and not n.learner for n in self.nodes.values())
        for n in self.nodes.values():
            if n.up and n.learner:
                n.learner = False
            elif n.up and n.data == "empty" and n.etcd == "Preparing" and leader:
                n.data, n.etcd, n.learner = "new", "Running", True
                self.new_id += 1
                n.member_id = f"{self.new_id:016x}"

    def members(self, t: Talosctl) -> list[Member]:
        n = self.node(t)
        group = [m for m in self.nodes.values() if m.data == n.data and m.data in ("old", "new")]
        if n.data == "old" and sum(1 for m in group if m.up and m.etcd == "Running") < 2:
            raise NodeError("etcd members on node: rpc error: code = Unknown desc = etcdserver: no leader")
        return [Member(m.member_id, m.name, (f"https://{m.ip}:2380",), (f"https://{m.ip}:2379",), m.learner)
                for m in group]


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    c = FakeCluster()
    work = tmp_path / "work"
    (work / ".talos").mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("DR_TALOS_DIR", str(work / ".talos"))
    tc = work / ".talos" / "talosconfig"
    tc.write_text("context: c\ncontexts:\n  c:\n    endpoints: [127.0.0.3]\n    nodes: [10.0.1.5]\n"
                  "    ca: YQ==\n    crt: YQ==\n    key: YQ==\n")
    tc.chmod(0o600)
    outputs = {keys.CLUSTER_NAME: "c", keys.CONTROLPLANE_CONFIG: "machine: {}", keys.NODE_PRIVATE_IP: IPS[0],
               keys.NODE_PUBLIC_IP: EIPS[0], keys.BUCKET: "b",
               keys.CONTROL_PLANE_NODES: [{"name": f"cp-{i}", "privateIp": IPS[i - 1], "publicIp": EIPS[i - 1],
                                           "instanceId": f"i-{i}", "availabilityZone": "a"} for i in (1, 2, 3)]}
    of = work / "outputs.json"
    of.write_text(json.dumps(outputs))
    of.chmod(0o600)
    monkeypatch.setenv("DR_STACK_OUTPUTS_FILE", str(of))
    monkeypatch.setattr("dr.adapters.talosapi.check_client_certificate", lambda pem, now: None)
    monkeypatch.setattr("dr.adapters.talosctl.talosconfig_credentials",
                        lambda cfg: type("C", (), {"cert_pem": b""})())
    monkeypatch.setattr(command.Restore, "prove", lambda self, f: command.verify.Proof(
        command.SnapshotStatus(None, None), None, ["(proved by tests/commands/restore/test_proof.py)"]))
    monkeypatch.setattr(undo, "what_it_undoes", lambda *a, **k: ["  undoes    (diff shown by the real command)"])
    stale: list[set[str]] = []
    monkeypatch.setattr(steps, "remove_stale_nodes", lambda t, d, addresses, *a: stale.append(addresses) or [])
    c.stale = stale

    def stage(t, *, insecure=False):
        c.tick()
        n = c.node(t)
        return "running" if n.etcd == "Running" else "booting"

    def service(t, name="etcd"):
        n = c.node(t)
        state = n.etcd if name == "etcd" else "Running"
        return ServiceStatus(state, "OK" if state == "Running" else "?", (ServiceEvent(state, "x", 100.0),))

    def reset(t, labels, timeout=600):
        assert tuple(labels) == ("EPHEMERAL",)
        n = c.node(t)
        c.calls.append(("reset", t.node))
        n.data, n.etcd, n.member_id = "empty", "Preparing", "0"

    def bootstrap_recover(t, snapshot, timeout=600):
        n = c.node(t)
        c.calls.append(("bootstrap", t.node))
        if n.data != "empty":
            return subprocess.CompletedProcess([], 1, "", "error: rpc error: code = AlreadyExists desc = etcd data "
                                                         "directory is not empty")
        n.data, n.etcd = "new", "Running"
        return subprocess.CompletedProcess([], 0, "", "")

    def health(t, wait_timeout="10m", timeout=900, control_plane_nodes=()):
        bad = [ip for ip in control_plane_nodes if c.nodes[ip].data != "new"]
        if bad:
            raise NodeError(f"healthcheck error: {bad}")

    monkeypatch.setattr(Talosctl, "stage", stage)
    monkeypatch.setattr(Talosctl, "service", service)
    monkeypatch.setattr(Talosctl, "machine_type", lambda t: c.node(t).mtype)
    monkeypatch.setattr(Talosctl, "etcd_members", lambda t: c.members(t))
    monkeypatch.setattr(Talosctl, "reset", reset)
    monkeypatch.setattr(Talosctl, "bootstrap_ready", lambda t: None)
    monkeypatch.setattr(Talosctl, "bootstrap_recover", bootstrap_recover)
    monkeypatch.setattr(Talosctl, "health", health)
    monkeypatch.setattr(Talosctl, "etcd_alarms", lambda t: [])
    monkeypatch.setattr(Talosctl, "kubeconfig", lambda t, path, timeout=60: Path(path).write_text("kube"))
    monkeypatch.setattr(Talosctl, "binary", property(lambda t: "talosctl"))
    return c


@pytest.fixture
def snap(real_snapshot, tmp_path) -> Path:
    p = tmp_path / "etcd-snapshot-20261206T000000Z.db"
    p.write_bytes(real_snapshot.read_bytes())
    return p


def run(snap: Path, *argv: str):
    return run_cli(restore.main, str(snap), *argv, *FAST, stdin=io.StringIO(""))


def jpath() -> Path:
    return journal.path_for(Path.cwd() / ".talos")


def lose(c: FakeCluster, *which: int) -> None:
    for i in which:
        c.nodes[IPS[i - 1]].up = False


def interrupt_after_mark(monkeypatch, step: str):
    """Ctrl-C right after the journal records ``step`` (before the call it precedes)."""
    real = journal_file.mark

    def mark(path, j, s):
        real(path, j, s)
        if s == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(journal_file, "mark", mark)
    return lambda: monkeypatch.setattr(journal_file, "mark", real)


def test_two_lost_restores_on_the_one_left_and_says_how_to_bring_back_the_others(cluster, snap):
    lose(cluster, 2, 3)
    res = run(snap, "--yes", "--no-safety-snapshot")
    assert res.code == 0, res
    assert cluster.calls == [("reset", IPS[0]), ("bootstrap", IPS[0])]
    out = res.out
    assert "quorum    LOST: 0 of 3 voting members run, 2 are needed" in out
    for n in ("cp-1", "cp-2", "cp-3"):  # the per-node table in the prompt
        assert n in out
    assert "bootstrap node: cp-1 (10.0.1.5)" in out and "restore complete" in out
    assert "pulumi up --refresh" in out and "--system-labels-to-wipe EPHEMERAL" in out  # how the lost ones come back
    assert not jpath().exists()
    assert cluster.stale and {IPS[0], EIPS[0], IPS[2]} <= cluster.stale[0]
    # `talosctl health` cannot pass with two nodes down: not waited for, and said so with the command for later.
    assert "not waiting for `talosctl health`" in out and "--control-plane-nodes 10.0.1.5,10.0.2.5,10.0.3.5" in out


def test_each_node_is_dialled_as_the_talosconfig_spells_its_elastic_ip(cluster):
    from dr.commands.settings import Resolver
    from dr.core.cluster_nodes import ClusterNode

    tc = Path.cwd() / ".talos" / "talosconfig"
    tc.write_text("context: c\ncontexts:\n  c:\n    endpoints: [127.0.0.3:46751, '127.0.0.5']\n"
                  "    nodes: [10.0.1.5]\n    ca: YQ==\n    crt: YQ==\n    key: YQ==\n")
    r = Resolver(restore.build_parser().parse_args(["latest"]))
    assert ha_cmd.endpoint_of(ClusterNode("cp-1", IPS[0], EIPS[0]), r) == "127.0.0.3:46751"
    assert ha_cmd.endpoint_of(ClusterNode("cp-2", IPS[1], EIPS[1]), r) == "127.0.0.5"
    assert ha_cmd.endpoint_of(ClusterNode("cp-3", IPS[2], EIPS[2]), r) == "127.0.0.7"  # not listed: the bare EIP


def test_one_left_running_with_data_and_replaced_empty_nodes_join(cluster, snap):
    lose(cluster, 2, 3)
    for i in (2, 3):  # `pulumi up --refresh` rebuilt them: empty etcd, waiting in their join loop
        n = cluster.nodes[IPS[i - 1]]
        n.up, n.data, n.etcd = True, "empty", "Preparing"
    res = run(snap, "--yes", "--no-safety-snapshot")
    assert res.code == 0, res
    assert cluster.calls == [("reset", IPS[0]), ("bootstrap", IPS[0])]  # the empty ones are not reset
    assert "joined: a voting member" in res.out and res.out.count("joined: a voting member") == 2
    assert all(n.data == "new" and not n.learner for n in cluster.nodes.values())
    assert "with 3 voting member(s)" in res.out


def test_quorum_intact_is_refused_naming_replace_member(cluster, snap):
    lose(cluster, 3)
    res = run(snap, "--yes")
    assert res.code == ExitCode.QUORUM_INTACT == 29, res
    assert "quorum is intact" in res.err and "talos-dr replace-member cp-3" in res.err
    assert "--rollback" in res.err and "nothing was changed" in res.err
    assert cluster.calls == [] and not jpath().exists()
    cluster.nodes[IPS[2]].up = True  # healthy: refused too; --rollback rolls it back after a warning
    res = run(snap, "--yes")
    assert res.code == 29 and "the cluster is healthy" in res.err
    res = run(snap, "--yes", "--rollback", "--no-safety-snapshot")
    assert res.code == 0, res
    assert "WARNING: etcd's quorum is INTACT" in res.out
    assert [c for c in cluster.calls if c[0] == "bootstrap"] == [("bootstrap", IPS[0])]
    assert sorted(ip for what, ip in cluster.calls if what == "reset") == sorted(IPS)


def test_an_init_node_is_refused_before_anything(cluster, snap):
    lose(cluster, 1, 3)
    cluster.nodes[IPS[1]].mtype = "init"
    res = run(snap, "--yes")
    assert res.code == ExitCode.HA_RESTORE_REFUSED == 30, res
    assert "cp-2 (10.0.2.5) is of machine type init" in res.err and "edit mc --mode=staged" in res.err
    assert cluster.calls == []


def test_the_prompt_asks_once_after_the_per_node_table(cluster, snap):
    lose(cluster, 2, 3)
    res = run_cli(restore.main, str(snap), *FAST, stdin=io.StringIO("yes\n"))
    assert res.code == ExitCode.NOT_CONFIRMED, res  # not a terminal
    assert "REACHABLE" in res.out and "VOTER" in res.out and cluster.calls == []


@pytest.mark.parametrize("step", [journal.BOOTSTRAP_TARGET, journal.BOOTSTRAP_STARTED])
def test_interrupted_at_the_worst_moment_resumes_with_one_bootstrap_on_the_recorded_node(cluster, snap, monkeypatch,
                                                                                      step):
    lose(cluster, 2, 3)
    for i in (2, 3):
        n = cluster.nodes[IPS[i - 1]]
        n.up, n.data, n.etcd = True, "empty", "Preparing"
    restore_mark = interrupt_after_mark(monkeypatch, step)
    res = run(snap, "--yes", "--no-safety-snapshot")
    assert res.code == ExitCode.INTERRUPTED, res
    j = journal_file.load(jpath())
    assert j is not None and j.bootstrap_target == IPS[0]
    assert ("bootstrap", IPS[0]) not in cluster.calls
    restore_mark()
    # Meanwhile the recorded node stops answering: the resume waits for it, never bootstraps another.
    cluster.nodes[IPS[0]].up = False
    res = run(snap, "--yes", "--no-safety-snapshot")
    assert res.code == ExitCode.TIMEOUT, res
    assert "cp-1 (10.0.1.5)" in res.err and "never another" in res.err
    assert [c for c in cluster.calls if c[0] == "bootstrap"] == []
    cluster.nodes[IPS[0]].up = True
    res = run(snap, "--yes", "--no-safety-snapshot")
    assert res.code == 0, res
    assert [c for c in cluster.calls if c[0] == "bootstrap"] == [("bootstrap", IPS[0])]
    assert [c for c in cluster.calls if c[0] == "reset"] == [("reset", IPS[0])]  # never reset again
    ids = {tuple(sorted(m.id for m in cluster.members(type("T", (), {"node": ip})()))) for ip in IPS}
    assert len(ids) == 1 and len(next(iter(ids))) == 3  # one cluster: the same three members seen from each node


def test_interrupted_after_the_bootstrap_call_never_sends_it_twice(cluster, snap, monkeypatch):
    lose(cluster, 2, 3)
    real = ha_cmd.HaRestore.bootstrap_target

    def then_ctrl_c(self, step):
        real(self, step)
        raise KeyboardInterrupt

    monkeypatch.setattr(ha_cmd.HaRestore, "bootstrap_target", then_ctrl_c)
    res = run(snap, "--yes", "--no-safety-snapshot")
    assert res.code == ExitCode.INTERRUPTED
    monkeypatch.setattr(ha_cmd.HaRestore, "bootstrap_target", real)
    res = run(snap, "--no-safety-snapshot")  # no --yes: after the reset the state proves what to do, no prompt
    assert res.code == 0, res
    assert cluster.calls == [("reset", IPS[0]), ("bootstrap", IPS[0])]


def test_interrupted_after_recording_a_reset_resumes_without_resetting_twice(cluster, snap, monkeypatch):
    lose(cluster, 3)
    cluster.nodes[IPS[1]].etcd = "Failed"  # cp-2's etcd broke: quorum lost, two nodes hold data
    restore_mark = interrupt_after_mark(monkeypatch, journal.on(journal.RESET, IPS[0]))
    res = run(snap, "--yes", "--no-safety-snapshot")
    assert res.code == ExitCode.INTERRUPTED and cluster.calls == []  # stopped before the reset call
    restore_mark()
    res = run(snap, "--yes", "--no-safety-snapshot")
    assert res.code == 0, res
    assert cluster.calls == [("reset", IPS[0]), ("reset", IPS[1]), ("bootstrap", IPS[0])]


def test_a_node_that_runs_with_data_at_the_bootstrap_is_refused(cluster, snap, monkeypatch):
    lose(cluster, 2, 3)
    restore_mark = interrupt_after_mark(monkeypatch, journal.BOOTSTRAP_TARGET)
    assert run(snap, "--yes", "--no-safety-snapshot").code == ExitCode.INTERRUPTED
    restore_mark()
    cluster.nodes[IPS[1]].up = True  # cp-2 came back with its old data while the restore was stopped
    res = run(snap, "--yes", "--no-safety-snapshot")
    assert res.code == ExitCode.HA_RESTORE_REFUSED, res
    assert "second etcd cluster" in res.err and "cp-2" in res.err
    assert [c for c in cluster.calls if c[0] == "bootstrap"] == []


def test_safety_snapshot_from_the_member_that_still_answers(cluster, snap, monkeypatch):
    lose(cluster, 1, 3)  # the bootstrap node is down: cp-2 is the one left, and the one bootstrapped
    taken: list[str] = []

    def etcd_snapshot(t, path, timeout=3600, stall=60.0):
        taken.append(t.node)
        Path(path).write_bytes(snap.read_bytes())
        from dr.adapters.talosctl import SnapshotInfo
        return SnapshotInfo(None, None, None, None)

    monkeypatch.setattr(Talosctl, "etcd_snapshot", etcd_snapshot)
    res = run(snap, "--yes")
    assert res.code == 0, res
    assert taken == [IPS[1]] and "safety snapshot kept at" in res.out
    assert cluster.calls == [("reset", IPS[1]), ("bootstrap", IPS[1])]
    assert "bootstrap node: cp-2 (10.0.2.5)" in res.out
    kept = list((Path.cwd() / ".talos" / "snapshots").glob("pre-restore-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == snap.read_bytes()
