"""The simulated Talos node: its state machine, persisted in ``<dir>/node/state.json``.

No daemon runs the node: every call takes the state lock, advances time-based transitions ("lazy" reboots),
checks the caller can reach and authenticate to the node in its current stage, then acts. The node's etcd is
a real etcd process (started, stopped by pid, wiped, restored with ``etcdctl snapshot restore``).

Stages are Talos' (``running``, ``maintenance``, ``resetting``, ``rebooting``, ``booting``, ``shutting down``)
plus two a real node cannot report because it is off: ``halted`` (reset without ``--reboot``) and ``unbootable``
(a reset that wiped the whole disk). While a reboot is under way the node is first reachable (``resetting``,
``rebooting``), then not (shown as ``rebooting``), then reachable again (``booting``) shortly before it settles.

Errors are gRPC-shaped (``NodeError(code, desc)``) or transport-shaped (``TransportError``) so ``sandbox.talosctl``
can print them the way talosctl does; ``sandbox/apid.py`` may reuse the same operations.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sandbox import etcd, faults, procs
from sandbox.layout import APID_PORT, Info, Paths
from sandbox.pki import ClusterSecrets

# Which roles may call what (Talos' RBAC, from the reference notes).
ROLES_SNAPSHOT = {"os:admin", "os:operator", "os:etcd:backup"}
ROLES_ADMIN = {"os:admin"}
ROLES_READ = {"os:admin", "os:operator", "os:reader"}

SYSTEM_LABELS = ("STATE", "EPHEMERAL", "META")
REACHABLE_PHASES = ("resetting", "rebooting", "shutting down", "booting")


class NodeError(Exception):
    """An error the node's API returns: ``rpc error: code = <code> desc = <desc>``."""

    def __init__(self, code: str, desc: str):
        super().__init__(f"rpc error: code = {code} desc = {desc}")
        self.code = code
        self.desc = desc


class TransportError(Exception):
    """The call never reached the API (refused connection, TLS handshake failure)."""

    def __init__(self, desc: str):
        super().__init__(f'rpc error: code = Unavailable desc = connection error: desc = "{desc}"')
        self.desc = desc


def refused(addr: str) -> TransportError:
    return TransportError(f"transport: Error while dialing: dial tcp {addr}:{APID_PORT}: connect: connection refused")


CERT_REQUIRED = TransportError("transport: authentication handshake failed: remote error: tls: certificate required")
UNKNOWN_AUTHORITY = TransportError(
    "transport: authentication handshake failed: tls: failed to verify certificate: "
    "x509: certificate signed by unknown authority"
)
BAD_CERTIFICATE = TransportError("transport: authentication handshake failed: remote error: tls: bad certificate")


@dataclass
class Auth:
    """What the client presents: nothing (``--insecure``) or a talosconfig context."""

    insecure: bool = False
    ca: str | None = None  # base64 PEM, as in talosconfig
    crt: str | None = None
    roles: list[str] | None = None  # None: the certificate was not signed by the node's CA


@dataclass
class State:
    stage: str = "running"  # settled stage
    configured: bool = True  # a machine config is on STATE
    etcd_pid: int | None = None
    timeline: list[list] = field(default_factory=list)  # [[at, phase], ...] of a reboot under way
    target: str | None = None  # stage the reboot ends in
    up_since: float = 0.0  # when the node last came up (start of the bootstrap not-ready window)
    whole_disk_wiped: bool = False
    resets: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> State:
        data = json.loads(path.read_text())
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def save(self, path: Path) -> None:
        part = path.with_name(path.name + ".part")
        part.write_text(json.dumps(self.__dict__, indent=2) + "\n")
        os.replace(part, path)


@dataclass
class View:
    """What the node looks like at one instant."""

    phase: str  # a Talos stage, or "down" (rebooting, unreachable), "halted", "unbootable"
    reachable: bool
    configured: bool
    etcd_running: bool
    etcd_waiting: bool  # configured, no etcd data: etcd is "Preparing", waiting for bootstrap
    ready: bool

    @property
    def stage(self) -> str:
        """The stage a user would see (``down`` shows as ``rebooting``)."""
        return "rebooting" if self.phase == "down" else self.phase


class Node:
    """Operations on one sandbox's node. Each public method locks, settles the state, checks access, acts."""

    def __init__(self, root: str | os.PathLike[str]):
        self.paths = Paths(root)
        self.info = Info.load(self.paths)

    # --- state and time ------------------------------------------------------------------------------------

    def faults(self) -> dict:
        return faults.load(self.paths.faults)

    def reboot_seconds(self) -> float:
        return float(self.faults().get("reboot_seconds", self.info.reboot_seconds))

    @contextlib.contextmanager
    def locked(self) -> Iterator[State]:
        """The node state under an exclusive lock, settled to now, saved on exit."""
        self.paths.node.mkdir(parents=True, exist_ok=True)
        with open(self.paths.lock, "a+") as lf:
            fcntl.flock(lf, fcntl.LOCK_EX)
            try:
                st = State.load(self.paths.state)
                self._settle(st)
                yield st
                st.save(self.paths.state)
            finally:
                fcntl.flock(lf, fcntl.LOCK_UN)

    def _phase(self, st: State, now: float) -> str:
        if not st.timeline:
            return st.stage
        phase = st.timeline[0][1]
        for at, p in st.timeline:
            if at <= now:
                phase = p
        return phase

    def _settle(self, st: State) -> None:
        now = time.time()
        if st.timeline:
            phase = self._phase(st, now)
            if phase in ("final", "booting") and self.faults().get("never_returns"):
                phase = "down"
            if phase != "final":
                return
            final_at = st.timeline[-1][0]
            st.timeline = []
            st.stage = st.target or "running"
            st.target = None
            st.up_since = final_at
        # Talos starts etcd by itself at boot when its data directory is not empty.
        if st.stage == "running" and st.configured and self._etcd_has_data() and not self._etcd_alive(st):
            self._start_etcd(st)

    def view(self, st: State) -> View:
        now = time.time()
        phase = self._phase(st, now)
        if phase == "final" or (phase == "booting" and self.faults().get("never_returns")):
            phase = "down"  # never_returns holds it back
        reachable = phase in ("running", "maintenance") or phase in REACHABLE_PHASES
        running = self._etcd_alive(st)
        configured = st.configured
        waiting = phase == "running" and configured and not running and not self._etcd_has_data()
        ready = phase == "running" and running and (now - st.up_since) >= self.not_ready_seconds()
        return View(phase, reachable, configured, running, waiting, ready)

    def not_ready_seconds(self) -> float:
        return float(self.faults().get("bootstrap_not_ready_seconds", self.info.bootstrap_not_ready_seconds))

    def snapshot_state(self) -> View:
        """The node as seen now (settles transitions; no access check)."""
        with self.locked() as st:
            return self.view(st)

    # --- etcd ----------------------------------------------------------------------------------------------

    def _etcd_alive(self, st: State) -> bool:
        return procs.alive(st.etcd_pid, str(self.paths.etcd_data))

    def _etcd_has_data(self) -> bool:
        d = self.paths.etcd_data
        return d.is_dir() and any(d.iterdir())

    def _start_etcd(self, st: State) -> None:
        st.etcd_pid = etcd.start(
            self.paths.etcd_data,
            self.info.etcd_name,
            self.info.etcd_client_port,
            self.info.etcd_peer_port,
            self.paths.logs / "etcd.log",
        )

    def _stop_etcd(self, st: State) -> None:
        procs.stop(st.etcd_pid, str(self.paths.etcd_data))
        st.etcd_pid = None

    def stop_everything(self) -> None:
        """Stop etcd (used by ``down``)."""
        with self.locked() as st:
            self._stop_etcd(st)

    # --- access checks -------------------------------------------------------------------------------------

    def _check_access(self, st: State, addr: str, auth: Auth, roles: set[str]) -> View:
        if addr != self.info.node_ip:
            raise refused(addr)
        v = self.view(st)
        if self.faults().get("unreachable") or not v.reachable:
            raise refused(addr)
        maintenance = v.phase == "maintenance" or (not v.configured and v.phase in REACHABLE_PHASES)
        if maintenance:
            if not auth.insecure:
                # A maintenance node presents a self-signed certificate the talosconfig's CA did not sign.
                raise UNKNOWN_AUTHORITY
            return v  # every caller is a reader there; the commands that run in maintenance allow it
        if auth.insecure:
            raise CERT_REQUIRED
        secrets = ClusterSecrets.load(self.paths.secrets)
        if auth.ca != secrets.os_ca_crt:
            raise UNKNOWN_AUTHORITY
        if auth.roles is None:
            raise BAD_CERTIFICATE
        if not set(auth.roles) & roles:
            raise NodeError("PermissionDenied", "not authorized")
        return v

    # --- operations ----------------------------------------------------------------------------------------

    def version(self, addr: str, auth: Auth) -> dict:
        with self.locked() as st:
            v = self._check_access(st, addr, auth, ROLES_READ)
            return {"tag": self.info.talos_version, "maintenance": v.phase == "maintenance"}

    def machine_status(self, addr: str, auth: Auth) -> View:
        with self.locked() as st:
            return self._check_access(st, addr, auth, ROLES_READ)

    def etcd_service(self, addr: str, auth: Auth) -> View:
        with self.locked() as st:
            return self._check_access(st, addr, auth, ROLES_READ)

    def kubeconfig(self, addr: str, auth: Auth) -> str:
        with self.locked() as st:
            v = self._check_access(st, addr, auth, ROLES_ADMIN)
            if v.phase != "running":
                raise NodeError("FailedPrecondition", f"kubeconfig is not available in stage {v.stage}")
            return self.paths.kubeconfig.read_text()

    def prepare_snapshot(self, addr: str, auth: Auth, dest: Path) -> None:
        """Check access and etcd, then take a real etcd snapshot into ``dest`` (the server side of EtcdSnapshot)."""
        with self.locked() as st:
            v = self._check_access(st, addr, auth, ROLES_SNAPSHOT)
            if v.phase != "running":
                raise NodeError("FailedPrecondition", f"etcd snapshot is not available in stage {v.stage}")
            if not v.etcd_running:
                state = "Preparing" if v.etcd_waiting else "Finished"
                raise NodeError("Unavailable", f"etcd is not running on this node (service etcd: {state})")
        try:
            etcd.snapshot_save(self.info.etcd_endpoint, dest)
        except etcd.EtcdFailure as exc:
            raise NodeError("Unknown", f"failed to take etcd snapshot: {exc}") from exc

    def reset(
        self,
        addr: str,
        auth: Auth,
        *,
        graceful: bool,
        reboot: bool,
        labels: list[str],
        wipe_mode: str = "all",
        user_disks: list[str] | None = None,
    ) -> None:
        with self.locked() as st:
            v = self._check_access(st, addr, auth, ROLES_ADMIN)
            if v.phase not in ("running", "maintenance"):
                raise NodeError("FailedPrecondition", f"reset is not allowed in stage {v.stage}")
            for label in labels:
                if label not in SYSTEM_LABELS:
                    raise NodeError("InvalidArgument", f'failed to find partition with label "{label}"')
            if graceful and v.configured and v.phase == "running":
                # A graceful reset first leaves etcd; the only member of a cluster cannot.
                raise NodeError(
                    "FailedPrecondition",
                    "failed to leave etcd cluster: etcd cluster has only one member (this node); "
                    "a single-node control plane must be reset with --graceful=false",
                )
            whole_disk = not labels and wipe_mode in ("all", "system-disk")
            self._stop_etcd(st)
            if whole_disk or "EPHEMERAL" in labels:
                shutil.rmtree(self.paths.etcd_data, ignore_errors=True)
                shutil.rmtree(self.paths.recover_dir, ignore_errors=True)
            wipe_state = whole_disk or "STATE" in labels
            if wipe_state:
                self.paths.machine_config.unlink(missing_ok=True)
            now = time.time()
            r = self.reboot_seconds()
            st.resets.append({"at": now, "graceful": graceful, "reboot": reboot, "labels": labels,
                              "wipe_mode": wipe_mode, "whole_disk": whole_disk})
            if whole_disk:
                st.whole_disk_wiped = True
                st.configured = False
                st.timeline = [[now, "resetting"], [now + 0.1 * r, "rebooting"], [now + 0.2 * r, "down"]]
                st.target = "unbootable"
                st.timeline.append([now + 0.2 * r + 0.001, "final"])
                return
            if not reboot:
                st.timeline = [[now, "resetting"], [now + 0.1 * r, "shutting down"], [now + 0.2 * r, "final"]]
                st.target = "halted"
                if wipe_state:
                    st.configured = False
                return
            st.timeline = [[now, "resetting"], [now + 0.1 * r, "rebooting"], [now + 0.2 * r, "down"],
                           [now + 0.85 * r, "booting"], [now + r, "final"]]
            if wipe_state:
                st.configured = False
            st.target = "running" if st.configured else "maintenance"

    def power_on(self) -> None:
        """Start a halted node again (what ``aws ec2 start-instances`` would do). An unbootable node stays so."""
        with self.locked() as st:
            if st.stage != "halted" or st.timeline:
                return
            now = time.time()
            r = self.reboot_seconds()
            st.timeline = [[now, "down"], [now + 0.85 * r, "booting"], [now + r, "final"]]
            st.target = "running" if st.configured else "maintenance"

    def apply_config(self, addr: str, auth: Auth, config_text: str, *, mode: str, dry_run: bool) -> str:
        """Apply a machine config; returns the talosctl message."""
        import yaml

        with self.locked() as st:
            v = self._check_access(st, addr, auth, ROLES_ADMIN)
            try:
                doc = yaml.safe_load(config_text)
            except yaml.YAMLError as exc:
                raise NodeError("InvalidArgument", f"failed to parse config: {exc}") from exc
            secrets = ClusterSecrets.load(self.paths.secrets)
            why = secrets.check_machine_config(doc)
            if why:
                raise NodeError("InvalidArgument", f"configuration validation failed: {why}")
            maintenance = v.phase == "maintenance"
            if dry_run:
                if maintenance:
                    return "Dry run summary:\nNode is running in maintenance mode and does not have a config yet."
                return "Dry run summary:\nApplied configuration without a reboot (no changes)."
            if not maintenance:
                self.paths.machine_config.write_text(config_text)
                return "Applied configuration without a reboot"
            if mode == "try":
                raise NodeError("InvalidArgument", "try mode is not supported in maintenance mode")
            self.paths.machine_config.parent.mkdir(parents=True, exist_ok=True)
            self.paths.machine_config.write_text(config_text)
            os.chmod(self.paths.machine_config, 0o600)
            now = time.time()
            r = self.reboot_seconds()
            st.configured = True
            st.timeline = [[now, "rebooting"], [now + 0.1 * r, "down"], [now + 0.85 * r, "booting"], [now + r, "final"]]
            st.target = "running"
            return "Applied configuration with a reboot"

    def bootstrap(self, addr: str, auth: Auth, recover_from: Path | None = None, skip_hash_check: bool = False):
        """Bootstrap etcd, fresh or from the snapshot at ``recover_from`` (already streamed to the node)."""
        with self.locked() as st:
            v = self._check_access(st, addr, auth, ROLES_ADMIN)
            if v.phase != "running":
                raise NodeError("FailedPrecondition", "bootstrap is not available yet")
            window = self.not_ready_seconds()
            elapsed = time.time() - st.up_since
            if elapsed < window:
                if elapsed < window / 3:
                    raise NodeError("FailedPrecondition", "bootstrap is not available yet")
                if elapsed < 2 * window / 3 or recover_from is None:
                    raise NodeError("FailedPrecondition", "time is not in sync yet")
                raise NodeError("FailedPrecondition", "etcd service is not ready for recovery yet")
            if v.etcd_running or self._etcd_has_data():
                raise NodeError("AlreadyExists", "etcd data directory is not empty")
            fail = self.faults().get("bootstrap_fails")
            if fail:
                raise NodeError("Internal", str(fail))
            if recover_from is not None:
                if not skip_hash_check:
                    ok, expected, actual = etcd.trailer_ok(recover_from)
                    if not ok:
                        raise NodeError(
                            "InvalidArgument",
                            f"failed to recover etcd: snapshot hash mismatch: expected sha256 {expected}, got {actual}",
                        )
                shutil.rmtree(self.paths.etcd_data, ignore_errors=True)
                try:
                    etcd.restore(
                        recover_from,
                        self.paths.etcd_data,
                        self.info.etcd_name,
                        self.info.etcd_peer_port,
                        skip_hash_check=skip_hash_check,
                    )
                except etcd.EtcdFailure as exc:
                    raise NodeError("Unknown", f"failed to recover etcd: {exc}") from exc
            try:
                self._start_etcd(st)
            except etcd.EtcdFailure as exc:
                raise NodeError("Unknown", f"failed to start etcd: {exc}") from exc
            st.up_since = min(st.up_since, time.time() - window)

    def health(self) -> tuple[bool, str]:
        """(healthy, reason) as the server-side health check sees it; no access check (talosctl checks first)."""
        with self.locked() as st:
            v = self.view(st)
        if self.faults().get("unreachable") or not v.reachable:
            return False, "connection refused"
        if self.faults().get("health_never"):
            return False, "etcd is unhealthy: injected fault health_never"
        if v.phase != "running":
            return False, f"node is in stage {v.stage}"
        if not v.etcd_running:
            return False, "etcd service is " + ("Preparing (waiting for bootstrap)" if v.etcd_waiting else "not running")
        ok, line = etcd.endpoint_health(self.info.etcd_endpoint)
        return ok, line
