"""dr.restore end to end against the sandbox: a simulated Talos node over a real etcd (reset really wipes it,
bootstrap --recover-from really restores it with etcdctl) and moto's S3 server."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest

from dr.adapters import journal_file
from dr.adapters.lock import exclusive
from dr.adapters.talosctl import Talosctl
from dr.commands import backup, restore
from dr.core import journal
from dr.core import outputs as keys
from dr.core.errors import ExitCode
from tests.support.tools import run_cli

pytestmark = pytest.mark.slow  # full restores on a sandbox (2-19 s each)

A = "/registry/configmaps/default/before-backup"
B = "/registry/configmaps/default/after-backup"
FAST = ("--poll-interval", "0.1", "--reboot-timeout", "30s", "--bootstrap-timeout", "30s", "--health-timeout", "20s")


class Tty(io.StringIO):
    """What a terminal gives the prompt: the typed line, and isatty() true."""

    def isatty(self) -> bool:
        return True


def run_restore(*argv: str, stdin=None):
    return run_cli(restore.main, *argv, *FAST, stdin=stdin if stdin is not None else io.StringIO(""))


def talos_dir() -> Path:
    return Path.cwd() / ".talos"


def backup_a_then_write_b(sb) -> Path:
    """A in etcd, a snapshot of it in S3 (and locally), then B written after the snapshot."""
    sb.put(A, "a")
    res = run_cli(backup.main, "--save-to-s3")
    assert res.code == 0, res
    [local] = [p for p in (talos_dir() / "snapshots").iterdir() if p.name.startswith("etcd-snapshot-")]
    sb.put(B, "b")
    assert set(sb.get_prefix("/registry/configmaps/default/")) >= {A, B}
    return local


def resets(sb) -> list[list[str]]:
    """talosctl reset calls the node carried out."""
    return [c["argv"] for c in sb.calls() if "reset" in c["argv"] and c["exit"] == 0]


def calls_of(sb, word: str) -> list[list[str]]:
    return [c["argv"] for c in sb.calls() if word in c["argv"]]


def assert_restored(sb, res) -> None:
    assert res.code == 0, res
    data = sb.get_prefix("/registry/configmaps/default/")
    assert data.get(A) == "a"
    assert B not in data
    assert sb.node.health()[0], "node not healthy after the restore"
    kube = talos_dir() / "kubeconfig"
    assert kube.is_file() and kube.stat().st_mode & 0o777 == 0o600
    assert not journal.path_for(talos_dir()).exists()
    assert "restore complete" in res.out and "kubectl get nodes" in res.out and "kubectl get pods -A" in res.out
    assert "talosctl" in res.out and "health" in res.out and "this run took" in res.out


def assert_untouched(sb) -> None:
    data = sb.get_prefix("/registry/configmaps/default/")
    assert data.get(A) == "a" and data.get(B) == "b"
    assert resets(sb) == []
    assert sb.node_state().resets == []
    assert calls_of(sb, "bootstrap") == []
    assert not journal.path_for(talos_dir()).exists()


@pytest.mark.parametrize("source", ["s3", "local", "latest"])
def test_full_cycle_restores_the_snapshot_data(sandbox_env, source, monkeypatch):
    sb = sandbox_env
    local = backup_a_then_write_b(sb)
    # the S3 copy is compressed: snapshots/<name>.zst
    spec = {"s3": f"s3://{sb.bucket}/snapshots/{local.name}.zst", "local": str(local), "latest": "latest"}[source]
    if source == "latest":
        # .talos/talosconfig is missing: restore writes it from the stack output, 0600, as `pulumi up` would.
        monkeypatch.delenv("TALOSCONFIG")
        kept = local.read_bytes()
        local.unlink()  # and downloads the snapshot again, into snapshots/downloads (listed, pruned)
    kube = talos_dir() / "kubeconfig"
    kube.write_text("stale")
    res = run_restore(spec, "--yes")
    assert_restored(sb, res)
    assert kube.read_text() != "stale"
    if source == "latest":
        tc = talos_dir() / "talosconfig"
        assert tc.stat().st_mode & 0o777 == 0o600
        assert tc.read_text() == sb.talosconfig.read_text()
    [reset] = resets(sb)
    assert "--system-labels-to-wipe=EPHEMERAL" in reset
    assert not any(a.startswith("--system-labels-to-wipe=STATE") for a in reset)
    assert "--graceful=false" in reset and "--reboot" in reset and "--wait=false" in reset
    assert not sb.node_state().whole_disk_wiped
    assert all(r["labels"] for r in sb.node_state().resets)  # never a reset without labels
    # A safety snapshot of the replaced etcd, which still holds B.
    [safety] = [p for p in (talos_dir() / "snapshots").iterdir() if p.name.startswith("pre-restore-etcd-snapshot-")]
    def total_keys(p: Path) -> int:
        return json.loads(sb.etcdctl("snapshot", "status", str(p), "-w", "json").stdout)["totalKey"]

    if source == "latest":
        local = talos_dir() / "snapshots" / "downloads" / local.name
        assert local.read_bytes() == kept and local.stat().st_mode & 0o777 == 0o600
    assert total_keys(safety) > total_keys(local)  # it has B, the restored snapshot does not
    assert safety.name in res.out
    # The safety snapshot is also in the bucket under its own name, and never becomes `latest`.
    from dr.adapters import s3 as s3_adapter

    client = s3_adapter.make_client(sb.region)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=sb.bucket)["Contents"]]
    assert f"snapshots/{safety.name}.zst" in keys, keys
    assert "pre-restore" not in client.head_object(Bucket=sb.bucket, Key="snapshots/latest")["Metadata"]["latest-of"]
    # What the confirmation showed.
    assert "LOST" in res.out and local.name in res.out and "revision" in res.out and sb.cluster_name in res.out


def test_confirmed_by_typing_yes_on_a_terminal(sandbox_env):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    res = run_restore("latest", "--no-safety-snapshot", stdin=Tty("yes\n"))
    assert_restored(sb, res)
    assert "Type yes to restore" in res.out
    assert not list((talos_dir() / "snapshots").glob("pre-restore-*"))


def _refusal_cases():
    def flip(p: Path, tmp: Path) -> str:
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        (tmp / "corrupt.db").write_bytes(bytes(data))
        return str(tmp / "corrupt.db")

    def truncate(p: Path, tmp: Path) -> str:
        (tmp / "cut.db").write_bytes(p.read_bytes()[:-100])
        return str(tmp / "cut.db")

    def empty(p: Path, tmp: Path) -> str:
        (tmp / "empty.db").write_bytes(b"")
        return str(tmp / "empty.db")

    def not_snapshot(p: Path, tmp: Path) -> str:
        (tmp / "notes.db").write_bytes(b"apiVersion: v1\nkind: ConfigMap\n" * 200)
        return str(tmp / "notes.db")

    return [
        ("corrupt", flip, ExitCode.CORRUPT_SNAPSHOT, "does not match its trailer"),
        ("truncated", truncate, ExitCode.TRUNCATED_SNAPSHOT, "truncated"),
        ("empty", empty, ExitCode.EMPTY_SNAPSHOT, "empty"),
        ("not a snapshot", not_snapshot, ExitCode.NOT_A_SNAPSHOT, "not an etcd snapshot"),
        ("missing file", lambda p, tmp: str(tmp / "nope.db"), ExitCode.NOT_FOUND, "does not exist"),
    ]


@pytest.mark.parametrize("name, make, code, text", _refusal_cases(), ids=[c[0] for c in _refusal_cases()])
def test_bad_snapshot_files_are_refused_before_the_node_is_touched(sandbox_env, tmp_path, name, make, code, text):
    sb = sandbox_env
    local = backup_a_then_write_b(sb)
    res = run_restore(make(local, tmp_path), "--yes")
    assert res.code == code, res
    assert text in res.err
    assert "talos-dr restore: error:" in res.err
    assert_untouched(sb)


def test_missing_s3_key_and_wrong_bucket_are_refused(sandbox_env):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    res = run_restore(f"s3://{sb.bucket}/snapshots/etcd-snapshot-20200101T000000Z.db", "--yes")
    assert res.code == ExitCode.NOT_FOUND, res
    assert "etcd-snapshot-20200101T000000Z.db" in res.err
    res = run_restore("s3://no-such-bucket-for-restore/snapshots/x.db", "--yes")
    assert res.code == ExitCode.BUCKET_NOT_FOUND, res
    assert "no-such-bucket-for-restore" in res.err
    assert_untouched(sb)


def test_no_yes_typed_refuses(sandbox_env):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    res = run_restore("latest", stdin=Tty("no\n"))
    assert res.code == ExitCode.NOT_CONFIRMED, res
    assert "not confirmed" in res.err and "'no'" in res.err and "nothing was changed" in res.err
    assert "LOST" in res.out  # it said what would be lost before asking
    assert_untouched(sb)
    assert not list((talos_dir() / "snapshots").glob("pre-restore-*"))  # no safety snapshot before the yes


def test_no_terminal_without_yes_refuses(sandbox_env):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    res = run_restore("latest", stdin=io.StringIO("yes\n"))  # piped input is not a terminal
    assert res.code == ExitCode.NOT_CONFIRMED, res
    assert "no terminal" in res.err and "--yes" in res.err
    assert_untouched(sb)


def test_missing_controlplane_config_output_refuses(sandbox_env, tmp_path):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    outs = json.loads(sb.outputs_file.read_text())
    del outs[keys.CONTROLPLANE_CONFIG]
    f = tmp_path / "outputs.json"
    f.write_text(json.dumps(outs))
    f.chmod(0o600)
    res = run_restore("latest", "--yes", "--outputs-file", str(f))
    assert res.code == ExitCode.CONFIG, res
    assert keys.CONTROLPLANE_CONFIG in res.err and "pulumi up" in res.err
    assert_untouched(sb)


def test_unreachable_node_refuses(sandbox_env):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    sb.set_faults(unreachable=True)
    res = run_restore("latest", "--yes")
    assert res.code == ExitCode.NODE_UNREACHABLE, res
    assert "does not answer" in res.err and "nothing was changed" in res.err
    assert res.err.count("does not answer on port 50000") == 1, res.err  # said once, not nested (first-use C4)
    sb.clear_faults()
    assert_untouched(sb)


def _interrupt_after(monkeypatch, step: str):
    """Ctrl-C right after ``step`` is recorded. Returns a function that stops interrupting."""
    real = journal_file.mark

    def mark(path, j, s):
        real(path, j, s)
        if s == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(journal_file, "mark", mark)
    return lambda: monkeypatch.setattr(journal_file, "mark", real)


def _interrupt_after_reset(monkeypatch):
    """Ctrl-C right after the node accepted the reset. Returns a function that stops interrupting."""
    real = Talosctl.reset

    def reset(self, labels, timeout=600):
        real(self, labels, timeout)
        raise KeyboardInterrupt

    monkeypatch.setattr(Talosctl, "reset", reset)
    return lambda: monkeypatch.setattr(Talosctl, "reset", real)


def test_interrupted_after_reset_resumes_without_asking_again(sandbox_env, monkeypatch):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    stop = _interrupt_after_reset(monkeypatch)
    res = run_restore("latest", "--yes")
    assert res.code == ExitCode.INTERRUPTED, res
    # The hint names the snapshot `latest` resolved to (a newer one may land before
    # the re-run) and repeats every flag that was given.
    assert "half done" in res.err and f"talos-dr restore s3://{sb.bucket}/snapshots/etcd-snapshot-" in res.err
    assert "talos-dr restore latest" not in res.err and "--yes" in res.err.split("talos-dr restore", 1)[1]
    j = journal_file.load(journal.path_for(talos_dir()))
    assert j is not None and j.done(journal.RESET) and not j.done(journal.BOOTSTRAP_STARTED)
    assert oct(journal.path_for(talos_dir()).stat().st_mode & 0o777) == "0o600"
    stop()
    # Same command, no --yes and no terminal: past the point of no return there is nothing left to confirm.
    res = run_restore("latest")
    assert_restored(sb, res)
    assert "continuing the restore" in res.out
    assert len(resets(sb)) == 1  # the node was not reset a second time


def test_interrupted_after_apply_config_resumes(sandbox_env, monkeypatch):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    stop = _interrupt_after(monkeypatch, journal.CONFIG_APPLIED)
    res = run_restore("latest", "--yes", "--wipe-state")
    assert res.code == ExitCode.INTERRUPTED, res
    assert "maintenance mode" in res.out
    stop()
    res = run_restore("latest")
    assert_restored(sb, res)
    [reset] = resets(sb)
    assert {"--system-labels-to-wipe=STATE", "--system-labels-to-wipe=EPHEMERAL"} <= set(reset)
    [apply] = calls_of(sb, "apply-config")
    assert "--insecure" in apply
    cfg = Path(apply[apply.index("--file") + 1])
    assert not cfg.exists()  # the temporary machine config was removed
    assert not list(talos_dir().glob(".controlplane-*"))


def test_interrupted_before_reset_changes_nothing(sandbox_env, monkeypatch):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    _interrupt_after(monkeypatch, journal.SAFETY_SNAPSHOT)
    res = run_restore("latest", "--yes")
    assert res.code == ExitCode.INTERRUPTED, res
    assert "nothing was changed" in res.err
    assert_untouched(sb)


def test_node_that_never_returns_times_out_resumably(sandbox_env):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    sb.set_faults(never_returns=True)
    res = run_cli(restore.main, "latest", "--yes", "--poll-interval", "0.1", "--reboot-timeout", "2s")
    assert res.code == ExitCode.TIMEOUT, res
    assert "did not come back" in res.err and f"talos-dr restore s3://{sb.bucket}/snapshots/" in res.err
    assert "node is " in res.out  # progress lines while waiting
    j = journal_file.load(journal.path_for(talos_dir()))
    assert j is not None and j.done(journal.RESET)
    # Still down: a re-run waits again and times out again, without a second reset.
    res = run_cli(restore.main, "latest", "--poll-interval", "0.1", "--reboot-timeout", "1s")
    assert res.code == ExitCode.TIMEOUT, res
    sb.clear_faults()
    res = run_restore("latest")
    assert_restored(sb, res)
    assert len(resets(sb)) == 1


def test_a_different_snapshot_while_one_is_half_done(sandbox_env, monkeypatch, tmp_path):
    sb = sandbox_env
    local = backup_a_then_write_b(sb)
    sb.put("/registry/configmaps/default/only-in-second", "c")
    assert run_cli(backup.main).code == 0
    second = max((talos_dir() / "snapshots").glob("etcd-snapshot-*"))
    assert second != local
    stop = _interrupt_after_reset(monkeypatch)
    assert run_restore(str(local), "--yes").code == ExitCode.INTERRUPTED
    stop()
    res = run_restore(str(second), "--yes")
    assert res.code == ExitCode.RESTORE_CONFLICT, res
    assert "half done" in res.err and str(local) in res.err and "--abandon-previous" in res.err
    assert calls_of(sb, "bootstrap") == []
    # The abandoned restore's reboot is still under way when the new one starts: it waits instead of refusing.
    sb.set_faults(never_returns=True)
    timer = threading.Timer(1.0, sb.clear_faults)
    timer.start()
    try:
        res = run_restore(str(second), "--yes", "--abandon-previous")
    finally:
        timer.cancel()
    assert res.code == 0, res
    assert "abandoning the half-done restore" in res.out
    assert "to settle after the abandoned restore's reset" in res.out
    assert "no reset is needed" in res.out  # etcd was already empty: nothing more was wiped
    assert len(resets(sb)) == 1
    data = sb.get_prefix("/registry/configmaps/default/")
    assert data.get("/registry/configmaps/default/only-in-second") == "c" and data.get(B) == "b"


def test_bootstrap_not_ready_is_retried(sandbox_env, monkeypatch):
    """Should the cheap readiness reads say ready too early, Bootstrap's own not-ready answers are still retried."""
    monkeypatch.setattr(Talosctl, "bootstrap_ready", lambda self: None)
    sb = sandbox_env
    backup_a_then_write_b(sb)
    sb.set_faults(bootstrap_not_ready_seconds=1.5)
    res = run_restore("latest", "--yes")
    assert_restored(sb, res)
    assert "not ready yet" in res.out
    attempts = calls_of(sb, "bootstrap")
    assert len(attempts) > 1 and all(c for c in attempts)


def test_bootstrap_failure_stops_and_resumes(sandbox_env):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    sb.set_faults(bootstrap_fails="injected: disk I/O error")
    res = run_restore("latest", "--yes")
    assert res.code == ExitCode.NODE_ERROR, res
    assert "injected: disk I/O error" in res.err and f"talos-dr restore s3://{sb.bucket}/snapshots/" in res.err
    sb.clear_faults()
    res = run_restore("latest")
    assert_restored(sb, res)


def test_unhealthy_after_bootstrap_times_out_then_finishes(sandbox_env):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    sb.set_faults(health_never=True)
    res = run_cli(restore.main, "latest", "--yes", "--poll-interval", "0.1", "--health-timeout", "1s")
    assert res.code == ExitCode.TIMEOUT, res
    assert "did not become healthy" in res.err
    j = journal_file.load(journal.path_for(talos_dir()))
    assert j is not None and j.done(journal.BOOTSTRAPPED) and not j.done(journal.HEALTHY)
    sb.clear_faults()
    n_boot = len(calls_of(sb, "bootstrap"))
    res = run_restore("latest")
    assert_restored(sb, res)
    assert "already runs" in res.out
    assert len(calls_of(sb, "bootstrap")) == n_boot  # etcd was not bootstrapped twice


def test_a_backup_during_a_restore_is_refused(sandbox_env, monkeypatch):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    seen = {}
    real = journal_file.mark

    def mark(path, j, s):
        real(path, j, s)
        if s == journal.RESET:
            seen["backup"] = run_cli(backup.main)

    monkeypatch.setattr(journal_file, "mark", mark)
    res = run_restore("latest", "--yes")
    assert_restored(sb, res)
    assert seen["backup"].code == ExitCode.LOCKED
    assert "a restore" in seen["backup"].err


def test_a_running_backup_blocks_the_restore(sandbox_env):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    with exclusive(talos_dir() / backup.LOCK_NAME, "a backup"):
        res = run_restore("latest", "--yes")
    assert res.code == ExitCode.LOCKED, res
    assert "a backup" in res.err
    assert_untouched(sb)


def test_etcd_not_wiped_stops_with_a_conflict_and_never_claims_success(sandbox_env, monkeypatch):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    real = journal_file.mark

    def someone_bootstraps_first(path, j, s):
        real(path, j, s)
        if s == journal.BOOTSTRAP_STARTED:  # a plain bootstrap lands first: etcd is no longer empty
            for _ in range(100):
                if sb.talosctl_run("bootstrap").returncode == 0:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the competing bootstrap never succeeded")
            for _ in range(100):  # the node starts etcd after the call returned: wait until it has data
                if sb.node_view().etcd_running:
                    return
                time.sleep(0.05)
            raise AssertionError("the competing bootstrap never started etcd")

    monkeypatch.setattr(journal_file, "mark", someone_bootstraps_first)
    res = run_restore("latest", "--yes")
    assert res.code == ExitCode.RESTORE_CONFLICT, res
    assert "etcd data directory is not empty" in res.err and "--abandon-previous" in res.err
    monkeypatch.setattr(journal_file, "mark", real)
    j = journal_file.load(journal.path_for(talos_dir()))
    assert j is not None and j.done(journal.RESET) and not j.done(journal.BOOTSTRAP_STARTED)
    # Running it again must not report success over data that is not the snapshot's: it starts over from the
    # confirmation (refused here: no terminal), and with --yes it resets again and restores.
    res = run_cli(restore.main, "latest", "--poll-interval", "0.1", "--reboot-timeout", "1s")
    assert res.code == ExitCode.NOT_CONFIRMED, res
    assert "runs etcd with data" in res.out + res.err
    assert A not in sb.get_prefix("/registry/configmaps/default/")
    assert len(resets(sb)) == 1
    res = run_restore("latest", "--yes")
    assert_restored(sb, res)
    assert len(resets(sb)) == 2


def test_failed_safety_snapshot_is_a_warning(sandbox_env):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    sb.set_faults(snapshot_corrupt=True)  # the node streams a damaged snapshot: its trailer check fails
    res = run_restore("latest", "--yes")
    assert_restored(sb, res)
    assert "warning: the safety snapshot" in res.err and "continuing without one" in res.err
    assert not list((talos_dir() / "snapshots").glob("pre-restore-*"))


def test_not_enough_disk_for_the_safety_snapshot_refuses(sandbox_env, tiny_fs):
    sb = sandbox_env
    local = backup_a_then_write_b(sb)
    res = run_restore(str(local), "--yes", "--talos-dir", str(tiny_fs / ".talos"))
    assert res.code == ExitCode.DISK_FULL, res
    assert "safety snapshot" in res.err and "--no-safety-snapshot" in res.err and "nothing was changed" in res.err
    assert_untouched(sb)


def test_a_refused_reset_leaves_no_half_done_restore(sandbox_env, monkeypatch):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    real = journal_file.mark

    def node_goes_away(path, j, s):
        real(path, j, s)
        if s == journal.SAFETY_SNAPSHOT:
            sb.set_faults(unreachable=True)

    monkeypatch.setattr(journal_file, "mark", node_goes_away)
    res = run_restore("latest", "--yes")
    assert res.code == ExitCode.NODE_UNREACHABLE, res
    # The node went away after the safety snapshot: the restore sees that before it sends the reset.
    assert "nothing was changed" in res.err
    sb.clear_faults()
    assert_untouched(sb)
    monkeypatch.setattr(journal_file, "mark", real)

    # Gone between the last probe and the reset itself: the refused connection means no reset, and no journal.
    real_reset = Talosctl.reset

    def refused_reset(self, labels, timeout=600):
        sb.set_faults(unreachable=True)
        return real_reset(self, labels, timeout)

    monkeypatch.setattr(Talosctl, "reset", refused_reset)
    res = run_restore("latest", "--yes")
    assert res.code == ExitCode.NODE_UNREACHABLE, res
    assert "the node was not reset" in res.err
    sb.clear_faults()
    assert_untouched(sb)


def test_unreadable_journal_needs_abandon_previous(sandbox_env):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    jpath = journal.path_for(talos_dir())
    jpath.write_text("{half a journ")
    res = run_restore("latest", "--yes")
    assert res.code == ExitCode.CONFIG, res
    assert "unreadable" in res.err and "--abandon-previous" in res.err
    assert resets(sb) == []
    res = run_restore("latest", "--yes", "--abandon-previous")
    assert_restored(sb, res)



def test_runbook_etcd_corrupt_node_running_restores(sandbox_env):
    """RUNBOOK scenario "etcd corrupt, node running": etcd crash-loops (Waiting, health Fail), no safety snapshot is
    possible, the reset wipes the corrupt data, and the restore completes."""
    sb = sandbox_env
    backup_a_then_write_b(sb)
    sb.set_faults(etcd_fails="exit code 1")
    assert run_cli(backup.main).code == ExitCode.NODE_ERROR  # a backup now says etcd is not running, at once
    res = run_restore("latest", "--yes")
    assert_restored(sb, res)
    assert "etcd Waiting" in res.out and "no safety snapshot" in res.out
    assert not list((talos_dir() / "snapshots").glob("pre-restore-*"))
    assert len(resets(sb)) == 1


def test_a_snapshot_the_node_refuses_is_reported_not_claimed(sandbox_env, tmp_path, monkeypatch):
    """The node checks the snapshot after `bootstrap --recover-from` returned: etcd Failed then is a refusal, said in
    one line with the next step; the journal stays honest and a re-run repeats the answer instead of looping."""
    sb = sandbox_env
    backup_a_then_write_b(sb)
    local = max((talos_dir() / "snapshots").glob("etcd-snapshot-*"))
    bad = tmp_path / "etcd-snapshot-20260101T000000Z.db"
    data = bytearray(local.read_bytes())
    data[-1] ^= 0xFF  # a wrong SHA-256 trailer, readable bbolt: only the node's own check sees it
    bad.write_bytes(bytes(data))
    from dr.commands.restore import command

    real = command.source.fetch

    def fetch_without_local_check(spec, r, dest, err):  # as if our own trailer check had been skipped
        f = real(str(local), r, dest, err)
        return f.__class__(bad, str(bad), f.digest)

    monkeypatch.setattr(command.source, "fetch", fetch_without_local_check)
    # ... and the throwaway-etcd proof too (it refuses this file, with etcd's own hash check, before the reset).
    real_prove = command.Restore.prove
    monkeypatch.setattr(command.Restore, "prove", lambda self, f: command.verify.Proof(
        command.SnapshotStatus(None, None), None, ["(skipped by this test)"]))
    res = run_restore(str(bad), "--yes")
    assert res.code == ExitCode.NODE_ERROR, res
    assert "failed to start from the snapshot" in res.err and "--abandon-previous" in res.err
    assert "restore complete" not in res.out
    j = journal_file.load(journal.path_for(talos_dir()))
    assert j is not None and j.done(journal.BOOTSTRAP_STARTED) and not j.done(journal.BOOTSTRAPPED)
    again = run_restore(str(bad))
    assert again.code == ExitCode.NODE_ERROR and "failed to start from the snapshot" in again.err
    monkeypatch.setattr(command.source, "fetch", real)
    monkeypatch.setattr(command.Restore, "prove", real_prove)
    # The way out it names: another snapshot, --abandon-previous (a new reset clears the failed attempt).
    res = run_restore(str(local), "--yes", "--abandon-previous")
    assert_restored(sb, res)


def test_json_prints_one_document_on_success_and_on_failure(sandbox_env):
    """--json on restore too; progress goes to stderr, stdout holds one JSON document."""
    sb = sandbox_env
    local = backup_a_then_write_b(sb)
    bad = run_restore(str(Path.cwd() / "nope.db"), "--yes", "--json")
    doc = json.loads(bad.out)
    assert bad.code == ExitCode.NOT_FOUND and doc["ok"] is False and doc["exit_code"] == ExitCode.NOT_FOUND
    res = run_restore("latest", "--yes", "--json")
    assert res.code == 0, res
    doc = json.loads(res.out)
    assert doc["ok"] is True and doc["snapshot"].startswith(f"s3://{sb.bucket}/snapshots/")
    assert doc["sha256"] == local.read_bytes()[-32:].hex(), doc
    assert "restore complete" in res.err, res.err[-500:]
    assert_restored(sb, type(res)(res.code, res.err, res.err))  # the narrative is on stderr with --json


def test_the_prompt_says_whether_dr_verify_proved_a_local_snapshot(tmp_path, real_snapshot):
    """The prompt says whether this snapshot was verified, for a file used in place: the catalog's record for exactly these bytes, no second read."""
    from dr.adapters.store import Entry, LocalStore, Verification
    from dr.commands.restore.prompt import describe_verification
    from dr.commands.source import Fetched
    from dr.core import naming
    from dr.core.integrity import verify_file

    snap = tmp_path / "etcd-snapshot-20260101T000000Z.db"
    snap.write_bytes(real_snapshot.read_bytes())
    f = Fetched(snap, str(snap), verify_file(snap))
    assert describe_verification(f).startswith("not yet")
    store = LocalStore(tmp_path)
    parsed = naming.parse(snap.name)
    assert parsed is not None
    entry = Entry("local", parsed, str(snap), snap.stat().st_size, parsed.taken_at, path=snap)
    store.record_verification(entry, Verification("2026-11-24T04:00:00Z", 7, 6, f.digest.file_sha256))
    assert "2026-11-24T04:00:00Z" in describe_verification(f) and "6 keys" in describe_verification(f)
    other = Fetched(snap, str(snap), type(f.digest)(f.digest.size, f.digest.content_sha256, "0" * 64))
    assert describe_verification(other).startswith("not yet")  # a record for other bytes does not count


def test_f4_the_snapshot_is_uploaded_once_while_the_node_gets_ready(sandbox_env):
    """`bootstrap --recover-from` uploads before Bootstrap answers "not ready": the restore waits with cheap reads
    (service cri, get timestatus) first, so a not-ready node costs no upload (talos-fidelity F4)."""
    sb = sandbox_env
    backup_a_then_write_b(sb)
    sb.set_faults(bootstrap_not_ready_seconds=4)  # long enough that the restore meets it even on a busy machine
    res = run_restore("latest", "--yes")
    assert_restored(sb, res)
    assert "not ready yet for the bootstrap" in res.out
    uploads = [c for c in calls_of(sb, "bootstrap") if any(a.startswith("--recover-from") for a in c)]
    assert len(uploads) == 1, uploads


def test_f2_an_image_pull_failure_after_the_bootstrap_is_retried_not_called_a_refusal(sandbox_env):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    sb.set_faults(etcd_image_pull_fails=1)
    res = run_restore("latest", "--yes")
    assert_restored(sb, res)
    assert "its image pull failed, before the snapshot was read; bootstrapping again" in res.out
    assert len(resets(sb)) == 1  # no second reset


def test_f2_a_pull_that_keeps_failing_says_network_not_snapshot(sandbox_env):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    sb.set_faults(etcd_image_pull_fails=5)
    res = run_restore("latest", "--yes")
    assert res.code == ExitCode.NODE_ERROR, res
    assert "cannot pull its image" in res.err and "the snapshot was not read" in res.err
    assert "refused it" not in res.err and "bootstrapping again is safe" in res.err


def test_f7_an_etcd_alarm_is_listed_and_reported_with_the_disarm_command(sandbox_env):
    """After the health wait the restore lists etcd's alarms (`talosctl etcd alarm list`): a NOSPACE alarm comes
    back with the snapshot and makes the cluster read-only (talos-fidelity F7)."""
    import io as _io

    from dr.commands.restore import steps
    from sandbox import etcd as sandbox_etcd

    sb = sandbox_env
    t = Talosctl(sb.private_ip, sb.talosconfig, binary=str(sb.talosctl), endpoint=sb.info.apid_endpoint)
    err = _io.StringIO()
    assert steps.warn_alarms(t, err, "dr.restore") == [] and err.getvalue() == ""
    sandbox_etcd.activate_alarm(sb.etcd_endpoint, "NOSPACE")
    [(member, alarm)] = steps.warn_alarms(t, err, "dr.restore")
    assert alarm == "NOSPACE" and len(member) == 16  # %016x
    assert "NOSPACE" in err.getvalue() and "etcd alarm disarm" in err.getvalue() and "etcd defrag" in err.getvalue()


def test_f7_an_alarm_restored_with_the_snapshot_is_reported_after_the_restore(sandbox_env):
    from sandbox import etcd as sandbox_etcd

    sb = sandbox_env
    sandbox_etcd.activate_alarm(sb.etcd_endpoint, "NOSPACE")
    res = run_cli(backup.main, "--save-to-s3")
    assert res.code == 0, res
    sandbox_etcd.deactivate_alarm(sb.etcd_endpoint, "NOSPACE")  # the live cluster recovered; the snapshot has it
    res = run_restore("latest", "--yes")
    assert res.code == 0, res.err
    assert "carries alarms restored with the snapshot: NOSPACE" in res.err and "etcd alarm disarm" in res.err
