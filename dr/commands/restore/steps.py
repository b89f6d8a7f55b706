"""The restore's actions on the node and on local files, one function each. ``dr.commands.restore.command`` runs them in
the order ``dr.core.restore_plan`` decides; each says what it does as it does it."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TextIO

from dr.adapters.fsutil import open_private
from dr.adapters.talosctl import NOT_READY, Talosctl
from dr.commands import cli
from dr.commands.backup import take_local_snapshot
from dr.commands.settings import Resolver
from dr.core import journal, spelling, timefmt
from dr.core import outputs as keys
from dr.core.errors import DiskFull, DRError, NodeError, NodeUnreachable, RestoreConflict, Timeout

SAFETY_MARGIN = 16 << 20


def check_disk(snapshots_dir: Path, size: int) -> None:
    """Room for the safety snapshot (about the size of the one restored), checked before anything changes."""
    need = 2 * size + SAFETY_MARGIN
    free = shutil.disk_usage(snapshots_dir).free
    if free < need:
        raise DiskFull(f"only {cli.human_size(free)} free in {snapshots_dir}; the safety snapshot of the "
                       f"current etcd needs about {cli.human_size(need)}; nothing was changed",
                       "free some space (or choose another --talos-dir), or pass --no-safety-snapshot")


def safety_snapshot(r: Resolver, clock: Callable[[], datetime], out: TextIO, err: TextIO, prog: str) -> Path | None:
    """A snapshot of the etcd about to be replaced, kept as ``pre-restore-...``. Best effort: a failure warns."""
    try:
        path, _digest, _info, _taken = take_local_snapshot(r, clock, out, safety=True)
    except DRError as exc:
        print(f"{prog}: warning: the safety snapshot of the current etcd failed ({exc}); continuing without one",
              file=err)
        return None
    print(f"safety snapshot kept at {path} (restore it the same way if this restore was a mistake)", file=out)
    upload_safety(r, path, out, err, prog)
    return path


def upload_safety(r: Resolver, path: Path, out: TextIO, err: TextIO, prog: str) -> str | None:
    """Best effort: the safety snapshot also goes to the bucket, under its own ``pre-restore-...`` name (compressed,
    encrypted like any other), so it survives the laptop; it is never pinned as ``latest`` (dr.adapters.store)."""
    from dr.adapters import s3
    from dr.core import naming
    from dr.core.integrity import iter_file

    try:
        store = r.s3_store()
        parsed = naming.parse(path.name)
        when = parsed.taken_at if parsed else clock_now()
        meta = s3.snapshot_metadata(taken_at=when, cluster=r.cluster, source="dr.restore")
        with open(path, "rb") as f:
            entry = store.put(iter_file(f), path.name, compress=True, recipients=r.recipients, metadata=meta,
                              label=f"safety snapshot {path}")
    except (DRError, OSError) as exc:
        print(f"{prog}: warning: the safety snapshot stays local only: uploading it failed ({exc})", file=err)
        return None
    print(f"safety snapshot also stored as {entry.location}", file=out)
    return entry.location


def clock_now() -> datetime:
    from datetime import UTC

    return datetime.now(UTC)


def apply_config(t: Talosctl, talos_dir: Path, controlplane: str, out: TextIO) -> None:
    """`apply-config --insecure` from a 0600 temporary file. Maintenance mode has no authentication: the node's
    certificate is self-signed, so without --cert-fingerprint the config goes to whoever answers (encrypted)."""
    how = (f"pinned to certificate fingerprint {', '.join(t.cert_fingerprints)}" if t.cert_fingerprints
           else "encrypted but NOT authenticated: pass --cert-fingerprint (shown on the node's console) to pin it")
    print(f"node {t.where} is in maintenance mode: applying the machine config from stack output "
          f"{keys.CONTROLPLANE_CONFIG} ({how})", file=out, flush=True)
    fd, name = tempfile.mkstemp(prefix=".controlplane-", suffix=".yaml", dir=talos_dir)  # 0600
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(controlplane)
        t.apply_config_insecure(tmp)
    finally:
        tmp.unlink(missing_ok=True)


_CONTROLPLANE_TEMP = re.compile(r"\.controlplane-[A-Za-z0-9_]{8}\.yaml")  # what apply_config's mkstemp creates


def sweep_controlplane_temps(talos_dir: Path) -> list[Path]:
    """Remove ``.talos/.controlplane-XXXXXXXX.yaml`` files (the machine config, a secret) that a SIGKILL during
    ``apply_config`` left behind: only regular files with exactly that name, owned by this user. Call under the lock."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(talos_dir))
    except FileNotFoundError:
        return removed
    for e in entries:
        if not _CONTROLPLANE_TEMP.fullmatch(e.name):
            continue
        try:
            st = e.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid():
            Path(e.path).unlink(missing_ok=True)
            removed.append(Path(e.path))
    return removed


class NotStarted(Exception):
    """The node refused every bootstrap attempt before one began: nothing of this restore is in etcd."""

    def __init__(self, error: DRError):
        super().__init__(str(error))
        self.error = error


def bootstrap(t: Talosctl, snapshot: Path, timeout: float, poll: float, out: TextIO, resume: str) -> None:
    """`bootstrap --recover-from`, retrying the node's documented not-ready answers. It returns once the node
    accepted the request: the snapshot's hash is checked later, on the node, when etcd starts from it. Raises
    ``NotStarted`` when the node refused it outright (or never got ready)."""
    node = t.node
    deadline = time.monotonic() + timeout
    last = None
    # `bootstrap --recover-from` uploads the snapshot before Bootstrap says whether the node is ready: wait for
    # what Bootstrap checks with cheap reads first, so a not-ready node costs no upload (talos-fidelity F4).
    while True:
        try:
            waiting: str | None = t.bootstrap_ready()
        except (NodeUnreachable, NodeError, Timeout) as probe_error:
            waiting = probe_error.message
        if waiting is None or time.monotonic() >= deadline:
            break
        if waiting != last:
            print(f"  node not ready yet for the bootstrap: {waiting}; waiting", file=out, flush=True)
            last = waiting
        time.sleep(poll)
    print(f"bootstrapping etcd on node {t.where} from {snapshot} (bootstrap --recover-from) ...", file=out, flush=True)
    while True:
        proc = t.bootstrap_recover(snapshot)
        if proc.returncode == 0:
            return
        text = proc.stderr + "\n" + proc.stdout
        waiting = next((n for n in NOT_READY if n in text), None)
        if waiting is None:
            exc = t.classify(text, "bootstrap --recover-from")
            if isinstance(exc, RestoreConflict):
                err = RestoreConflict(
                    f"bootstrap --recover-from on node {node} refused: etcd data directory is not empty",
                    f"etcd was not wiped; check `talosctl -n {node} -e {t.endpoint} service etcd`, then run "
                    f"`{resume} --abandon-previous` to reset the node again")
                raise NotStarted(err) from None
            if not isinstance(exc, NodeUnreachable):
                raise NotStarted(exc)  # the node refused: nothing began
            waiting = "node does not answer"
        if waiting != last:
            print(f"  node not ready yet: {waiting}; retrying", file=out, flush=True)
            last = waiting
        if time.monotonic() >= deadline:
            timed_out = Timeout(f"bootstrap --recover-from on node {node} did not succeed within "
                                f"{timefmt.human_duration(timeout)} (last: {waiting})",
                                f"check `talosctl -n {node} -e {t.endpoint} service etcd` and `time`; then run "
                                f"`{resume}` again (or give it longer with --bootstrap-timeout)")
            raise NotStarted(timed_out)  # every attempt was refused before it began
        time.sleep(poll)


IMAGE_PULL_FAILED = "failed to pull image"  # services/etcd.go:106-115, before any recovery


def failed_retry_note(t: Talosctl, message: str) -> str:
    why = ("its image pull failed, before the snapshot was read" if IMAGE_PULL_FAILED in message.lower()
           else "possibly before it read the snapshot")
    return (f"etcd on node {t.where} failed after the bootstrap ({message}): {why}; bootstrapping again, which is "
            "safe: a node that read the snapshot refuses it (etcd data directory is not empty)")


def recovery_failed(t: Talosctl, message: str, j: journal.Journal | None, resume: str) -> DRError:
    """etcd Failed after our bootstrap, and again after this run bootstrapped once more (or the node refused that
    with AlreadyExists): the node refused the snapshot or could not start etcd from it; or it cannot pull etcd's
    image, which is a network problem, not the snapshot's."""
    if IMAGE_PULL_FAILED in message.lower():
        return NodeError(
            f"etcd on node {t.where} cannot pull its image after the reset (service etcd: {message}); the snapshot "
            "was not read and nothing of it is in etcd",
            f"check the node reaches its image registry (DNS, internet gateway, `talosctl -n {t.node} -e "
            f"{t.endpoint} logs etcd` and `dmesg`), then run `{resume}` again: bootstrapping again is safe")
    safety = f" (the safety snapshot {j.safety_snapshot}, or another)" if j and j.safety_snapshot else ""
    return NodeError(
        f"etcd on node {t.where} failed to start from the snapshot after `bootstrap --recover-from` was accepted "
        f"(service etcd: {message}); the node checked the snapshot and refused it, or etcd cannot run it",
        f"look at `talosctl -n {t.node} -e {t.endpoint} logs etcd`; restore another snapshot{safety} with "
        f"`{spelling.command('restore', 'SNAPSHOT', '--abandon-previous')}` (it resets the node again); re-running "
        f"`{resume}` only repeats this answer")


# How long a candidate stale Node's Lease is watched: longer than a kubelet's default leaseDurationSeconds (40 s),
# which it renews every quarter of that (10 s; kubernetes v1.34 pkg/kubelet/kubelet.go nodeLeaseRenewIntervalFraction).
STALE_LEASE_WAIT = 45.0


def _lease_mark(lease: dict | None) -> tuple[str, str] | None:
    """What changes when a kubelet renews its Lease: the object's resourceVersion and ``spec.renewTime``."""
    if lease is None:
        return None
    return (str((lease.get("metadata") or {}).get("resourceVersion", "")), str((lease.get("spec") or {}).get("renewTime", "")))


def remove_stale_nodes(t: Talosctl, talos_dir: Path, addresses: set[str], timeout: float, poll: float,
                       out: TextIO, err: TextIO, prog: str) -> list[str]:
    """After etcd runs from the snapshot, before the health wait: delete the Kubernetes Nodes no current machine
    answers for, and say which and why. The restored etcd still holds the Node of the machine the snapshot was
    taken on; when that machine was replaced by one with another address, the old Node stays NotReady for ever and
    `talosctl health` refuses it ("unexpected nodes with IPs", "some nodes are not ready": talos v1.13.9
    pkg/cluster/cluster.go:101-129, pkg/cluster/check/kubernetes.go:30-78,216-245).

    A Node is deleted only when it is proven stale: its InternalIP is none of this stack's node ``addresses``, and
    its kubelet's Lease did not change while watched for ``STALE_LEASE_WAIT`` seconds (a running kubelet renews it
    every 10 s). A Node that answers, or one without an InternalIP, is kept and named. Best effort: a failure warns
    (with the command to do it by hand) and the health wait goes on. Returns the names deleted."""
    from dr.adapters.kubeapi import KubeAPI, internal_ips, node_name
    from dr.adapters.talosapi.h2stream import printable as p  # names and addresses come from the API: escaped

    manual = ("if `talosctl health` then reports unexpected or not-ready nodes, list them with `kubectl get nodes "
              "-o wide` (KUBECONFIG=.talos/kubeconfig) and delete the old machine's with `kubectl delete node NAME`")
    try:
        fd, name = tempfile.mkstemp(prefix=".kubeconfig-", dir=talos_dir)  # 0600 from the first byte
        os.close(fd)
        try:
            t.kubeconfig(Path(name))
            text = Path(name).read_text()
        finally:
            Path(name).unlink(missing_ok=True)
        api = KubeAPI.from_kubeconfig(text)
        deadline = time.monotonic() + timeout
        while True:
            try:
                nodes = api.list_nodes()
                break
            except NodeUnreachable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(poll)
        candidates: list[tuple[str, list[str]]] = []
        for obj in nodes:
            ips = internal_ips(obj)
            if not ips:
                print(f"  Kubernetes Node {p(node_name(obj))} reports no InternalIP: kept (cannot tell whose it is)",
                      file=out)
            elif not set(ips) & addresses:
                candidates.append((node_name(obj), ips))
        if not candidates:
            return []
        shown = ", ".join(f"{p(c)} ({p(' '.join(ips))})" for c, ips in candidates)
        print(f"Kubernetes Nodes with an address no machine of this cluster has ({shown}); this node is "
              f"{' '.join(sorted(addresses))}. Watching their kubelets' Leases for "
              f"{timefmt.human_duration(STALE_LEASE_WAIT)} before removing them ...", file=out, flush=True)
        before = {c: _lease_mark(api.get_lease(c)) for c, _ in candidates}
        time.sleep(STALE_LEASE_WAIT)
        removed: list[str] = []
        for n, ips in candidates:
            if _lease_mark(api.get_lease(n)) != before[n]:
                print(f"{prog}: warning: Kubernetes Node {p(n)} ({p(' '.join(ips))}) is not this cluster's node, but its "
                      "kubelet renewed its Lease just now: a machine answers for it, so it is kept", file=err)
                continue
            if api.delete_node(n):
                removed.append(n)
            print(f"removed Kubernetes Node {p(n)} (InternalIP {p(' '.join(ips))}): it is the machine the snapshot was "
                  f"taken on, which this node replaced; no machine of this cluster has that address and its kubelet "
                  f"did not renew its Lease in {timefmt.human_duration(STALE_LEASE_WAIT)}", file=out, flush=True)
        return removed
    except DRError as exc:
        print(f"{prog}: warning: could not check the cluster's Kubernetes Nodes ({exc.message}); {manual}", file=err)
        return []


def health(t: Talosctl, timeout: float, out: TextIO, resume: str) -> None:
    print(f"waiting for the cluster to be healthy (talosctl health --control-plane-nodes {t.node}, up to "
          f"{timefmt.human_duration(timeout)}) ...", file=out, flush=True)
    try:
        t.health(wait_timeout=f"{max(int(timeout), 1)}s", timeout=timeout + 60)
    except DRError as exc:
        raise Timeout(f"node {t.where} did not become healthy within {timefmt.human_duration(timeout)} after etcd "
                      f"started from the snapshot ({exc.message})",
                      f"etcd runs from the snapshot; look at `talosctl -n {t.node} -e {t.endpoint} health` and "
                      f"`logs etcd`; once healthy, run `{resume}` again to finish (or give it longer with "
                      "--health-timeout)") from exc


def warn_alarms(t: Talosctl, err: TextIO, prog: str) -> list[tuple[str, str]]:
    """etcd alarms live in its backend and come back with the snapshot (`etcdutl snapshot restore` trims only the
    membership: etcd v3.6.12 etcdutl/snapshot/v3_snapshot.go:363): a NOSPACE alarm restores a read-only cluster.
    List them (`talosctl etcd alarm list`) and say how to clear them. Best effort."""
    from dr.adapters.talosapi.h2stream import printable

    try:
        alarms = t.etcd_alarms()
    except DRError as exc:
        print(f"{prog}: warning: could not list etcd's alarms ({exc.message}); check with `talosctl -n {t.node} -e "
              f"{t.endpoint} etcd alarm list`", file=err)
        return []
    if alarms:
        shown = ", ".join(f"{printable(alarm)} (member {printable(member)})" for member, alarm in alarms)
        print(f"{prog}: warning: etcd on node {t.where} carries alarms restored with the snapshot: {shown}; while "
              f"NOSPACE is raised etcd refuses writes. Compact and defragment (`talosctl -n {t.node} -e {t.endpoint} "
              f"etcd defrag`), then clear them with `talosctl -n {t.node} -e {t.endpoint} etcd alarm disarm`",
              file=err)
    return alarms


def kubeconfig(t: Talosctl, talos_dir: Path) -> Path:
    """`talosctl kubeconfig --force` into ``.talos/kubeconfig``, pre-created 0600: talosctl writes an existing file in
    place (``os.WriteFile`` keeps its mode), so the credentials are never group-readable, not even for a moment."""
    path = talos_dir / "kubeconfig"
    created = not path.exists()
    fd = open_private(path, os.O_WRONLY, "the kubeconfig", f"remove it (`rm {path}`) and run the restore again to finish")
    try:
        os.fchmod(fd, 0o600)  # an existing file may be more open
    finally:
        os.close(fd)
    try:
        t.kubeconfig(path)
    except BaseException:
        with contextlib.suppress(OSError):
            if created and os.lstat(path).st_size == 0:
                path.unlink()  # ours, still empty: leave no empty kubeconfig behind
        raise
    os.chmod(path, 0o600, follow_symlinks=False)  # in case a talosctl version replaces the file instead
    return path
