"""The simulated Talos node: its state machine, persisted in ``<dir>/node/state.json``.

No daemon runs the node: every call takes the state lock, advances time-based transitions ("lazy" reboots),
checks the caller can reach and authenticate to the node in its current stage, then acts. The node's etcd is
a real etcd process (started, stopped by pid, wiped, restored with ``etcdctl snapshot restore``).

Stages are Talos' (``running``, ``maintenance``, ``resetting``, ``rebooting``, ``booting``, ``shutting down``)
plus two a real node cannot report because it is off: ``halted`` (reset without ``--reboot``) and ``unbootable``
(a reset that wiped the whole disk). While a reboot is under way the node is first reachable (``resetting``,
``rebooting``), then not (shown as ``rebooting``), then reachable again (``booting``) shortly before it settles.
A configured node reports ``running`` only once its boot sequence ends, which waits for etcd to be up: a node whose
etcd waits for a bootstrap (after an EPHEMERAL reset) or keeps failing stays ``booting``.

The node has two addresses, as on AWS: a private IP on its interface (what ``--nodes`` must name) and an Elastic IP
that only the operator's machine dials (``--endpoints``, or ``--nodes`` with ``--insecure``). An authenticated call
whose ``nodes`` metadata is not the private IP is forwarded by apid, which cannot reach the Elastic IP.
Every behaviour, with the upstream file it comes from, is listed in ``sandbox/CONFORMANCE.md``.

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

from dr.adapters.fsutil import atomic_write
from sandbox import etcd, faults, kube, procs
from sandbox.layout import APID_PORT, Info, Paths
from sandbox.pki import ClusterSecrets

# Which roles may call what (Talos' RBAC, from the reference notes).
ROLES_SNAPSHOT = {"os:admin", "os:operator", "os:etcd:backup"}
ROLES_ADMIN = {"os:admin"}
ROLES_READ = {"os:admin", "os:operator", "os:reader"}
# EtcdStatus and EtcdAlarmList: readers and the backup role too (machined.go:69,78 at v1.13.9).
ROLES_ETCD_INFO = {"os:admin", "os:operator", "os:reader", "os:etcd:backup"}

SYSTEM_LABELS = ("STATE", "EPHEMERAL", "META")
REACHABLE_PHASES = ("resetting", "rebooting", "shutting down", "booting")


class NodeError(Exception):
    """An error the node's API returns: ``rpc error: code = <code> desc = <desc>``."""

    def __init__(self, code: str, desc: str):
        super().__init__(f"rpc error: code = {code} desc = {desc}")
        self.code = code
        self.desc = desc


class SnapshotHangs(Exception):
    """EtcdSnapshot with etcd down: machined's etcd client waits for a connection to localhost:2379 with no
    deadline (v1alpha1_server.go EtcdSnapshot, etcd client v3.6 WaitForReady), so the stream sends nothing until the
    client gives up. The same for EtcdMemberList and EtcdStatus (``etcd members``, ``etcd status``) on a node whose
    etcd is not running."""


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
    stage: str = "running"  # settled: "running" (booted with a config; shown as booting until etcd is up),
    #                          "maintenance", "halted", "unbootable"
    configured: bool = True  # a machine config is on STATE
    etcd_pid: int | None = None
    timeline: list[list] = field(default_factory=list)  # [[at, phase], ...] of a reboot under way
    target: str | None = None  # stage the reboot ends in
    up_since: float = 0.0  # when the node last came up (start of the bootstrap not-ready window)
    boot_done: bool = True  # the boot sequence ended (it waits for etcd to be up): the stage reads "running"
    etcd_events: list[list] = field(default_factory=list)  # [[ts, state, message], ...], oldest first
    etcd_health: str = "OK"  # the service's health: "OK", "Fail", or "?" (no check has run yet)
    bootstrap: dict | None = None  # a Bootstrap the node accepted whose etcd start has not happened yet
    whole_disk_wiped: bool = False
    resets: list[dict] = field(default_factory=list)
    # Multi-node (sandbox/membership.py): the --initial-cluster a joining member starts with (None: itself only, a new
    # cluster), the learner id still to promote, when the join loop last tried, and why it waits.
    etcd_initial_cluster: str | None = None
    learner_id: int | None = None
    join_tried_at: float = 0.0
    join_waiting: str | None = None
    lost: str | None = None  # "power" (powered off, disks kept) or "terminated" (instance and disks gone)
    machine_type: str = "controlplane"  # the MachineType resource (a test may make one "init")
    kubelet_registered: bool = False  # multi-node: this boot's kubelet has its Node in the cluster's etcd
    etcd_tried_at: float = 0.0  # multi-node: when etcd was last (re)started with its data

    @classmethod
    def load(cls, path: Path) -> State:
        data = json.loads(path.read_text())
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def save(self, path: Path) -> None:
        atomic_write(path, json.dumps(self.__dict__, indent=2) + "\n", mode=0o644)

    def etcd_event(self, state: str, message: str, at: float | None = None) -> None:
        """Record an etcd service event, as machined's service runner does (events.go); keeps the last 20."""
        if self.etcd_events and self.etcd_events[-1][1:] == [state, message]:
            return
        self.etcd_events.append([time.time() if at is None else at, state, message])
        del self.etcd_events[:-20]

    @property
    def etcd_state(self) -> str:
        return self.etcd_events[-1][1] if self.etcd_events else "Preparing"


# The etcd service's event messages: internal/app/machined/pkg/system/service_runner.go:165,220,271,282,
# runner/containerd/containerd.go:225, runner/restart/restart.go:141-156 (tests/golden/talosctl/service-etcd-*.txt).
STARTING = "Starting service"
WAITING = ('Waiting for volumes /var/lib, ETCD to be mounted, service "cri" to be "up", time sync, network, '
           "etcd spec")
PRE_STATE = "Running pre state"
CREATING = "Creating service runner"
HEALTHY = "Health check successful"
CRASHED = ('Error running Containerd(etcd), going to restart forever: task "etcd" failed: exit code 1 '
           '(last log "{\\"level\\":\\"fatal\\",\\"msg\\":\\"failed to open database\\"}")')


ETCD_IMAGE = "registry.k8s.io/etcd:v3.6.12"  # constants.go:443 EtcdImage, at the etcd version Talos v1.13.9 pins


def started(pid: int | None) -> str:
    return f"Started task etcd (PID {pid}) for container etcd"


def boot_events(at: float) -> list[list]:
    """A service runner's first events, up to its pre-start (a new boot, or the runner Bootstrap loads)."""
    return [[at, "Starting", STARTING], [at, "Waiting", WAITING], [at, "Preparing", PRE_STATE]]


@dataclass
class View:
    """What the node looks like at one instant."""

    phase: str  # a Talos stage, or "down" (rebooting, unreachable), "halted", "unbootable"
    reachable: bool
    configured: bool
    etcd_running: bool
    etcd_waiting: bool  # configured, no etcd data, no bootstrap yet: etcd is Preparing, in its join loop
    ready: bool
    etcd_state: str = "Preparing"  # the etcd service's state (system/events/events.go words)
    etcd_events: list = field(default_factory=list)
    etcd_health: str = "?"
    moving: bool = False  # a reboot is under way (its timeline has not ended)

    @property
    def stage(self) -> str:
        """The stage a user would see (``down`` shows as ``rebooting``)."""
        return "rebooting" if self.phase == "down" else self.phase


class Node:
    """Operations on one sandbox's node. Each public method locks, settles the state, checks access, acts."""

    def __init__(self, root: str | os.PathLike[str], index: int = 1):
        self.index = index
        self.paths = Paths(root, index)
        self.info = Info.load(self.paths).for_node(index)

    # --- the other nodes of a multi-node sandbox -----------------------------------------------------------

    @property
    def multi(self) -> bool:
        """Part of a sandbox of several control-plane nodes (one real etcd member each)."""
        return self.info.node_count > 1

    def cluster(self) -> list[Node]:
        """Every node of the sandbox, this one included (node 1 first)."""
        return [self if i == self.index else Node(self.paths.root, i) for i in range(1, self.info.node_count + 1)]

    def siblings(self) -> list[Node]:
        return [n for n in self.cluster() if n.index != self.index]

    def for_call(self, addr: str, md: str | None) -> Node:
        """The node a call dialing ``addr`` with ``nodes`` metadata ``md`` runs on: the node whose private IP ``md``
        names (apid forwards it there), else the node whose Elastic IP (or, with --insecure, whose address) was
        dialed, else this one (which then answers as a failed dial or forward)."""
        nodes = self.cluster()
        if md:
            for n in nodes:
                if md == n.info.private_ip:
                    return n
        for n in nodes:
            if addr == n.info.public_ip or (md is None and addr == n.info.private_ip):
                return n
        return self

    def has_own_work(self) -> bool:
        """Whether the node has something to do while nobody calls it (read without the lock): a reboot under way, a
        bootstrap to start, a learner to promote, or a configured running node whose etcd is not up (its join loop,
        its restart). A settled, healthy node has none: an idle sandbox costs its apids a file read per tick."""
        try:
            st = State.load(self.paths.state)
        except (OSError, ValueError):
            return False
        if st.timeline or st.bootstrap is not None or st.learner_id is not None:
            return True
        return st.stage == "running" and st.configured and not self._etcd_alive(st)

    def peek(self) -> View:
        """The node as seen now without its lock and without settling (a gateway's view during a forwarded call,
        so no two node locks are ever held at once)."""
        return self.view(State.load(self.paths.state))

    # --- state and time ------------------------------------------------------------------------------------

    def faults(self) -> dict:
        return faults.load(self.paths.faults)

    def reboot_seconds(self) -> float:
        return float(self.faults().get("reboot_seconds", self.info.reboot_seconds))

    def etcd_start_seconds(self) -> float:
        """How long after an accepted Bootstrap the etcd service gets to its pre-start (recovery) and start."""
        return float(self.faults().get("etcd_start_seconds", 0.2))

    @contextlib.contextmanager
    def locked(self, *, settle: bool = True) -> Iterator[State]:
        """The node state under an exclusive lock, settled to now (unless ``settle=False``), saved on exit."""
        self.paths.node.mkdir(parents=True, exist_ok=True)
        with open(self.paths.lock, "a+") as lf:
            fcntl.flock(lf, fcntl.LOCK_EX)
            try:
                # A replaced instance has a new private IP and hostname (Sandbox.replace_instance): a long-lived
                # process (the apid) must see them.
                self.info = Info.load(self.paths).for_node(self.index)
                st = State.load(self.paths.state)
                try:
                    if settle:
                        self._settle(st)
                    yield st
                finally:
                    # Also when the body refused the call (an access check after a settle that started etcd): the
                    # settled state, the new etcd pid included, is real. Not saving it leaked an etcd `down` could
                    # not find (tests/commands/restore/test_stale_nodes.py, an unreachable node).
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
            # A new boot: the boot sequence starts over and ends only once etcd is up (v1alpha1_sequencer.go).
            st.boot_done = False
            st.bootstrap = None
            st.etcd_events = boot_events(final_at) if st.stage == "running" else []
            st.etcd_health = "?"
            st.kubelet_registered = False
        if st.stage != "running" or not st.configured:
            return
        self._settle_etcd(st, now)

    def _settle_etcd(self, st: State, now: float) -> None:
        """Advance the etcd service the way machined runs it: started at boot when its data directory has data,
        otherwise in its pre-state (the join loop) until Bootstrap; a requested bootstrap (with or without recovery)
        starts it asynchronously, after the Bootstrap call returned. A failing etcd process is restarted forever
        (restart.go): the service shows Waiting with health Fail; a failed pre-start is final (Failed)."""
        if self.faults().get("etcd_fails"):
            if self._etcd_alive(st):
                self._stop_etcd(st)
            if st.etcd_state != "Waiting" or st.etcd_health != "Fail":
                st.etcd_event("Running", started(os.getpid()))
                st.etcd_event("Waiting", CRASHED)
            st.etcd_health = "Fail"
            return
        if st.bootstrap is not None:
            if now < st.bootstrap["at"] + self.etcd_start_seconds():
                return
            job, st.bootstrap = st.bootstrap, None
            self._start_bootstrapped(st, job)
        elif not self._etcd_alive(st) and self._etcd_has_data() and st.etcd_state != "Failed":
            if self.multi:
                # restart.Forever waits RestartInterval (5 s) between runs of a failed task (runner/restart/
                # restart.go:44-80); the sandbox 1 s, so a member that keeps failing (removed from its cluster) is not
                # restarted at every settle.
                if now - st.etcd_tried_at < 1.0:
                    return
                st.etcd_tried_at = now
            self._run_etcd(st)
        elif self.multi and not self._etcd_alive(st) and st.etcd_state not in ("Failed", "Finished"):
            # (Finished: `etcd leave` stopped the service; it stays stopped until the next boot.)
            from sandbox import membership

            membership.join(self, st, now)  # the join loop of a member with no data (services/etcd.go)
        if self._etcd_alive(st):
            st.boot_done = True
            if st.learner_id is not None:
                from sandbox import membership

                membership.promote(self, st)
            if self.multi:
                self._check_quorum(st)
                if st.etcd_health == "OK" and st.learner_id is None and not st.kubelet_registered:
                    st.kubelet_registered = self.register_kubelet()

    def _check_quorum(self, st: State) -> None:
        """The etcd service's health check on a member of several (services/etcd.go HealthFunc -> ValidateQuorum, a
        quorum read with a timeout): it fails while the member has no leader, and the service runner records each
        change of health as an event (service_runner.go:125-131). The process keeps running."""
        why = etcd.health_reason(self.info.etcd_client_port, host=self.info.etcd_host, timeout=1)
        ok = why is None or why.startswith("ALARM")
        if ok and st.etcd_health != "OK":
            st.etcd_event("Running", HEALTHY)
        elif not ok and st.etcd_health != "Fail":
            st.etcd_event("Running", "Health check failed: context deadline exceeded")
        st.etcd_health = "OK" if ok else "Fail"

    def _run_etcd(self, st: State) -> None:
        try:
            self._start_etcd(st)
        except etcd.EtcdFailure:
            st.etcd_event("Waiting", CRASHED)
            st.etcd_health = "Fail"
            return
        st.etcd_event("Preparing", CREATING)
        st.etcd_event("Running", started(st.etcd_pid))
        st.etcd_event("Running", HEALTHY)
        st.etcd_health = "OK"
        self.register_kubelet()

    def register_kubelet(self) -> bool:
        """The kubelet (re)registers this machine's Node once the API answers: named after its hostname, with its
        private IP as InternalIP (sandbox/kube.py). A Node of another hostname in the same etcd stays as it was.
        On a multi-node sandbox the API is the cluster's (any member with a leader), and a kubelet whose write failed
        tries again at the next settle (``_check_quorum``). Whether its Node is there."""
        from datetime import UTC, datetime

        endpoint: str | None = self.info.etcd_endpoint
        if self.multi:
            from sandbox import membership

            endpoint = membership.answering_endpoint(self.cluster(), leader=True)
            if endpoint is None:
                return False
        assert endpoint is not None
        try:
            current = etcd.get_key(endpoint, kube.NODES_PREFIX + self.info.hostname)
            if current is not None and kube.node_ips(kube.decode(self.info.hostname, current)) == [self.info.private_ip]:
                return True  # its own Node is there (status heartbeats are not modelled: a restored etcd stays as it was)
            kube.register(endpoint, self.info.hostname, self.info.private_ip,
                          datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        except etcd.EtcdFailure:
            return False  # etcd went away again: the next start registers
        return True

    def _image_pull_fails(self) -> bool:
        """Fault ``etcd_image_pull_fails`` = N: the next N pulls of etcd's image fail (counted down)."""
        current = self.faults()
        left = int(current.get("etcd_image_pull_fails") or 0)
        if left <= 0:
            return False
        current["etcd_image_pull_fails"] = left - 1
        faults.save(self.paths.faults, {k: v for k, v in current.items() if v})
        return True

    def _start_bootstrapped(self, st: State, job: dict) -> None:
        """etcd's PreFunc for a bootstrap: recover the uploaded snapshot (hash checked here, on the node,
        services/etcd.go recoverFromSnapshot with etcdutl's restore), then start. A failed pre-start is final: the
        service stays Failed, the uploaded snapshot is kept, and the restore has already created
        member/snap/db, so the data directory is no longer empty (etcdutl v3_snapshot.go copyAndVerifyDB)."""
        if self._image_pull_fails():
            # The PreFunc pulls etcd's image before anything else (services/etcd.go:106-115; an EPHEMERAL reset
            # wiped the image store): a failed pull fails the pre stage (service_runner.go:273-279, system.go:194-200)
            # with the data directory still empty and the uploaded snapshot kept.
            st.etcd_event("Failed", f'Failed to run pre stage: failed to pull image "{ETCD_IMAGE}": failed to pull '
                                    f'image "{ETCD_IMAGE}": dial tcp: lookup registry.k8s.io: i/o timeout')
            return
        recover = job.get("recover")
        if recover:
            snapshot = Path(recover)
            ok, expected, actual = etcd.trailer_ok(snapshot)
            # etcd v3.6.12 etcdutl/snapshot/v3_snapshot.go copyAndVerifyDB: a file has a hash only when its size is
            # 32 past a 512-byte boundary (hasChecksum); without one and without --skip-hash-check (Talos passes
            # `--recover-skip-hash-check` through as SkipHashCheck) the restore fails before anything is written.
            if not job.get("skip_hash") and snapshot.stat().st_size % 512 != 32:
                db = self.paths.etcd_data / "member" / "snap" / "db"  # copied before the check, as upstream does
                db.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(snapshot, db)
                st.etcd_event("Failed", "Failed to run pre stage: error recovering from the snapshot: snapshot missing "
                                        "hash but --skip-hash-check=false")
                return
            if not job.get("skip_hash") and not ok:
                db = self.paths.etcd_data / "member" / "snap" / "db"
                db.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(snapshot, db)

                def go_bytes(hexstr: str) -> str:
                    return "[" + " ".join(str(b) for b in bytes.fromhex(hexstr)) + "]"

                st.etcd_event("Failed", "Failed to run pre stage: error recovering from the snapshot: expected "
                                        f"sha256 {go_bytes(expected)}, got {go_bytes(actual)}")
                return
            shutil.rmtree(self.paths.etcd_data, ignore_errors=True)
            try:
                etcd.restore(snapshot, self.paths.etcd_data, self.info.etcd_name, self.info.etcd_peer_port,
                             skip_hash_check=bool(job.get("skip_hash")), host=self.info.etcd_host)
            except etcd.EtcdFailure as exc:
                st.etcd_event("Failed", f"Failed to run pre stage: error recovering from the snapshot: {exc}")
                return
            snapshot.unlink(missing_ok=True)  # deleted once recovered (recoverFromSnapshot)
        self._run_etcd(st)

    def view(self, st: State) -> View:
        now = time.time()
        phase = self._phase(st, now)
        if phase == "final" or (phase == "booting" and self.faults().get("never_returns")):
            phase = "down"  # never_returns holds it back
        if phase == "running" and st.configured and not st.boot_done:
            phase = "booting"  # the boot sequence waits for etcd to be up (StartAllServices)
        reachable = phase in ("running", "maintenance") or phase in REACHABLE_PHASES
        running = self._etcd_alive(st)
        configured = st.configured
        booted = phase in ("running", "booting") and not st.timeline and configured
        state = ("Running" if running else st.etcd_state) if booted else "Waiting"
        waiting = booted and not running and st.bootstrap is None and state == "Preparing" \
            and not self._etcd_has_data()
        ready = phase == "running" and running and (now - st.up_since) >= self.not_ready_seconds()
        return View(phase, reachable, configured, running, waiting, ready, state, list(st.etcd_events),
                    st.etcd_health if booted else "?", bool(st.timeline))

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
            self.paths.log("etcd"),
            quota_bytes=self.info.etcd_quota_bytes,
            host=self.info.etcd_host,
            initial_cluster=st.etcd_initial_cluster,
            cluster_state="existing" if st.etcd_initial_cluster else "new",
            # A member of several does not answer /health without a leader (a learner, or quorum lost): it runs.
            wait_healthy=not self.multi,
        )

    def _stop_etcd(self, st: State) -> None:
        procs.stop(st.etcd_pid, str(self.paths.etcd_data))
        st.etcd_pid = None

    def stop_everything(self) -> None:
        """Stop etcd (used by ``down``)."""
        with self.locked() as st:
            self._stop_etcd(st)

    # --- access checks -------------------------------------------------------------------------------------

    def local_addresses(self) -> tuple[str, ...]:
        """NodeAddress ``current`` (what apid's IsLocalTarget matches): the interface's private IP and, on AWS, the
        platform's external IP, the Elastic IP IMDS reports as ``public-ipv4`` (talos v1.13.9
        platform/aws/aws.go:234-238 ExternalIPs; controllers/network/node_address.go:165-168 puts external
        addresses into ``current``). On a configured control plane apid forwards every ``nodes`` request anyway
        (``forwards``)."""
        return (self.info.private_ip, self.info.public_ip)

    def routed_addresses(self) -> tuple[str, ...]:
        """NodeAddress ``routed`` (external addresses excluded, node_address.go:170-175): what etcd advertises."""
        return (self.info.private_ip,)

    def connect(self, st: State, dial: str) -> View:
        """The TCP connection from the operator's machine to ``dial``:50000. Only the Elastic IP is reachable from
        outside the VPC; the private IP is not routed there; anything else is nobody."""
        if dial == self.info.private_ip and dial != self.info.public_ip:
            raise TransportError(f"transport: Error while dialing: dial tcp {dial}:{APID_PORT}: i/o timeout")
        if dial != self.info.public_ip:
            raise refused(dial)
        v = self.view(st)
        if self.faults().get("unreachable") or not v.reachable:
            raise refused(dial)
        return v

    def _gateway(self, addr: str) -> Node | None:
        """The other node of this sandbox whose Elastic IP ``addr`` is (its apid forwards the call here), or None."""
        if not self.multi or addr == self.info.public_ip:
            return None
        return next((n for n in self.siblings() if n.info.public_ip == addr), None)

    def _forwarded_to(self, v: View) -> None:
        """The hop from the gateway's apid to this node's apid inside the VPC (backend/apid.go dials
        ``<private IP>:50000``). A node that is off (stopped or terminated instance) answers nothing: the dial times
        out; one rebooting has no apid listening: refused. The error comes back from the gateway as the node's."""
        if self.faults().get("unreachable") or not v.reachable:
            why = "i/o timeout" if v.phase in ("halted", "unbootable") else "connect: connection refused"
            raise NodeError("Unavailable", f'connection error: desc = "transport: Error while dialing: dial tcp '
                                           f'{self.info.private_ip}:{APID_PORT}: {why}"')
        if v.phase == "maintenance" or not v.configured:
            # A node in maintenance presents its self-signed maintenance certificate to the gateway's apid.
            raise NodeError("Unavailable", 'connection error: desc = "transport: authentication handshake failed: '
                                           'tls: failed to verify certificate: x509: certificate signed by unknown '
                                           'authority"')

    def connect_peek(self, dial: str) -> View:
        """``connect`` without this node's lock (see ``peek``)."""
        return self.connect(State.load(self.paths.state), dial)

    def _check_access(self, st: State, addr: str, auth: Auth, roles: set[str], *, node: str | None = None) -> View:
        """``addr`` is the address dialed (the endpoint; with --insecure the node itself); ``node`` is the ``nodes``
        metadata an authenticated call carries (None: the call is for the endpoint itself). On a multi-node sandbox
        ``addr`` may be another node's Elastic IP: that node's apid takes the call (its stage decides the TLS
        handshake) and forwards it here (``for_call`` picked this node from ``node``)."""
        gateway = self._gateway(addr)
        if gateway is None:
            v = self.connect(st, addr)
        else:
            v = gateway.connect_peek(addr)
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
        if node is not None and node not in self.routed_addresses():
            # apid forwards a request whose `nodes` metadata is not one of its own addresses (director.go,
            # backend/apid.go): it dials <node>:50000. The Elastic IP is only reachable through the internet
            # gateway, and the security group admits 50000 from the admin CIDRs only: the dial times out.
            raise NodeError("Unavailable", f'connection error: desc = "transport: Error while dialing: dial tcp '
                                           f'{node}:{APID_PORT}: i/o timeout"')
        if gateway is not None:
            v = self.view(st)
            self._forwarded_to(v)
        if not set(auth.roles) & roles:
            raise NodeError("PermissionDenied", "not authorized")
        return v

    # --- operations ----------------------------------------------------------------------------------------
    # ``addr`` is the address dialed, ``node`` the `nodes` metadata of an authenticated call (see _check_access).

    def version(self, addr: str, auth: Auth, *, node: str | None = None) -> dict:
        with self.locked() as st:
            v = self._check_access(st, addr, auth, ROLES_READ, node=node)
            return {"tag": self.info.talos_version, "maintenance": v.phase == "maintenance"}

    def machine_status(self, addr: str, auth: Auth, *, node: str | None = None) -> View:
        with self.locked() as st:
            return self._check_access(st, addr, auth, ROLES_READ, node=node)

    def etcd_service(self, addr: str, auth: Auth, *, node: str | None = None) -> View:
        with self.locked() as st:
            v = self._check_access(st, addr, auth, ROLES_READ, node=node)
            if v.phase not in ("running", "booting"):
                raise NodeError("NotFound", 'service "etcd" not found')
            return v

    def kubeconfig(self, addr: str, auth: Auth, *, node: str | None = None) -> str:
        with self.locked() as st:
            self._check_access(st, addr, auth, ROLES_ADMIN, node=node)
            return self.paths.kubeconfig.read_text()

    def etcd_info_access(self, addr: str, auth: Auth, *, node: str | None = None) -> bool:
        """Check access for EtcdStatus / EtcdAlarmList (roles: machined.go:69,78 at v1.13.9); whether etcd runs."""
        with self.locked() as st:
            v = self._check_access(st, addr, auth, ROLES_ETCD_INFO, node=node)
            return bool(v.etcd_running)

    def prepare_snapshot(self, addr: str, auth: Auth, dest: Path, *, node: str | None = None) -> None:
        """Check access, then take a real etcd snapshot into ``dest`` (the server side of EtcdSnapshot: machined's
        etcd client on 127.0.0.1:2379, whatever the stage)."""
        with self.locked() as st:
            v = self._check_access(st, addr, auth, ROLES_SNAPSHOT, node=node)
            if not v.etcd_running:
                raise SnapshotHangs()
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
        node: str | None = None,
    ) -> None:
        with self.locked() as st:
            v = self._check_access(st, addr, auth, ROLES_ADMIN, node=node)
            if v.phase not in ("running", "booting", "maintenance"):
                raise NodeError("FailedPrecondition", f"reset is not allowed in stage {v.stage}")
            for label in labels:
                if label not in SYSTEM_LABELS:
                    raise NodeError("Unknown", f'failed to get volume status with label "{label}"')
            now = time.time()
            if graceful and v.configured and v.phase in ("running", "booting"):
                # The Reset RPC starts the sequence in the background and returns (v1alpha1_server.go); its first
                # step leaves etcd, which the only member of a cluster cannot: the sequence fails on the node and
                # nothing is wiped. A member of several leaves when a quorum answers (membership.leave).
                from sandbox import membership

                failed = membership.leave_for_reset(self, st)
                if failed:
                    st.resets.append({"at": now, "graceful": True, "reboot": reboot, "labels": labels,
                                      "wipe_mode": wipe_mode, "whole_disk": False, "failed": failed})
                    return
            whole_disk = not labels and wipe_mode in ("all", "system-disk")
            self._stop_etcd(st)
            st.bootstrap = None
            if whole_disk or "EPHEMERAL" in labels:
                st.etcd_initial_cluster, st.learner_id, st.join_waiting = None, None, None
                shutil.rmtree(self.paths.etcd_data, ignore_errors=True)
                shutil.rmtree(self.paths.recover_dir, ignore_errors=True)
                current = self.faults()
                if current.pop("etcd_fails", None) is not None:  # the corrupt data it stood for is gone
                    faults.save(self.paths.faults, current)
            wipe_state = whole_disk or "STATE" in labels
            if wipe_state:
                self.paths.machine_config.unlink(missing_ok=True)
            r = self.reboot_seconds()
            st.resets.append({"at": now, "graceful": graceful, "reboot": reboot, "labels": labels,
                              "wipe_mode": wipe_mode, "whole_disk": whole_disk})
            if whole_disk:
                st.whole_disk_wiped = True
                st.configured = False
                st.timeline = [[now, "resetting"], [now + 0.2 * r, "rebooting"], [now + 0.5 * r, "down"]]
                st.target = "unbootable"
                st.timeline.append([now + 0.8 * r, "final"])
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
        """Start a halted node again (what ``aws ec2 start-instances`` would do). An unbootable node stays so, and so
        does a terminated instance (``lose(disk=True)``: only ``replace`` brings one back)."""
        with self.locked() as st:
            if st.stage != "halted" or st.timeline or st.lost == "terminated":
                return
            st.lost = None
            now = time.time()
            r = self.reboot_seconds()
            st.timeline = [[now, "down"], [now + 0.85 * r, "booting"], [now + r, "final"]]
            st.target = "running" if st.configured else "maintenance"

    def apply_config(self, addr: str, auth: Auth, config_text: str, *, mode: str, dry_run: bool,
                     node: str | None = None) -> str:
        """Apply a machine config; returns the talosctl message."""
        import yaml

        with self.locked() as st:
            v = self._check_access(st, addr, auth, ROLES_ADMIN, node=node)
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
            # In maintenance mode REBOOT and AUTO become NO_REBOOT: the node goes on with its boot sequence, now
            # configured (CONFORMANCE.md "apply-config in maintenance").
            now = time.time()
            r = self.reboot_seconds()
            st.configured = True
            st.timeline = [[now, "booting"], [now + 0.3 * r, "final"]]
            st.target = "running"
            return "Applied configuration without a reboot"

    def _booted(self, st: State, v: View) -> float:
        """Seconds since a configured node came up; bootstrap and recovery need one (FailedPrecondition before)."""
        if v.phase not in ("running", "booting") or st.timeline:
            raise NodeError("FailedPrecondition", "bootstrap is not available yet")
        return time.time() - st.up_since

    def boot_progress(self, addr: str, auth: Auth, *, node: str | None = None) -> tuple[str, bool]:
        """(state of the CRI service, whether time is synced): what Bootstrap checks first. Both come in the
        not-ready window after a boot (the sandbox's ``bootstrap_not_ready_seconds``)."""
        with self.locked() as st:
            v = self._check_access(st, addr, auth, ROLES_READ, node=node)
            if v.phase not in ("running", "booting") or st.timeline:
                return "Waiting", False
            elapsed, window = time.time() - st.up_since, self.not_ready_seconds()
            return ("Running" if elapsed >= window / 3 else "Waiting"), elapsed >= 2 * window / 3

    def etcd_alarms(self, addr: str, auth: Auth, *, node: str | None = None) -> list[tuple[int, str]]:
        """EtcdAlarmList: the node's etcd's alarms (RBAC: admin, operator, reader, etcd:backup; machined.go:69)."""
        with self.locked() as st:
            v = self._check_access(st, addr, auth, ROLES_READ | ROLES_SNAPSHOT, node=node)
            if not v.etcd_running:
                raise NodeError("Unavailable", "etcd is not running")
        try:
            return etcd.alarm_members(self.info.etcd_endpoint)
        except etcd.EtcdFailure as exc:
            raise NodeError("Unknown", str(exc)) from exc

    def etcd_recover(self, addr: str, auth: Auth, src: Path, *, node: str | None = None) -> None:
        """EtcdRecover: store the uploaded snapshot where etcd's pre-start will look for it (v1alpha1_server.go
        EtcdRecover; constants.EtcdRecoverySnapshotPath). Nothing is checked here."""
        with self.locked() as st:
            v = self._check_access(st, addr, auth, ROLES_ADMIN, node=node)
            if self._booted(st, v) < self.not_ready_seconds() / 3:
                # /var/lib (EPHEMERAL) is not mounted yet early in the boot.
                raise NodeError("FailedPrecondition", "etcd service is not ready for recovery yet")
            self.paths.recover_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, self.paths.recover_snapshot)

    def bootstrap(self, addr: str, auth: Auth, *, recover: bool = False, skip_hash_check: bool = False,
                  node: str | None = None) -> None:
        """Bootstrap etcd (v1alpha1_server.go Bootstrap, then services/etcd.go BootstrapEtcd). Returns as soon as
        etcd's restart is requested: the recovery and its hash check happen later, in etcd's pre-start."""
        with self.locked() as st:
            v = self._check_access(st, addr, auth, ROLES_ADMIN, node=node)
            elapsed = self._booted(st, v)
            window = self.not_ready_seconds()
            if elapsed < window / 3:
                raise NodeError("FailedPrecondition", "bootstrap is not available yet")
            if elapsed < 2 * window / 3:
                raise NodeError("FailedPrecondition", "time is not in sync yet")
            if v.etcd_running or self._etcd_has_data():
                # BootstrapEtcd stops etcd and fakes Finished before it checks the data directory.
                raise NodeError("AlreadyExists", "etcd data directory is not empty")
            fail = self.faults().get("bootstrap_fails")
            if fail:
                raise NodeError("Internal", str(fail))
            self._stop_etcd(st)
            st.etcd_initial_cluster, st.learner_id, st.join_waiting = None, None, None  # a new cluster of one
            # BootstrapEtcd fakes Finished on the old runner ("Bootstrap requested"), which releases the boot
            # sequence's wait for etcd (the stage reads running from here on, whatever etcd does next), then loads
            # a new runner with an empty event history (services/etcd.go:687-714).
            st.boot_done = True
            now = time.time()
            st.etcd_events = boot_events(now)
            st.etcd_health = "?"
            recover_path = str(self.paths.recover_snapshot) if recover else None
            if recover and not self.paths.recover_snapshot.exists():
                recover_path = None  # Talos would fail the pre-start reading a missing file; nothing was uploaded
            st.bootstrap = {"at": time.time(), "recover": recover_path, "skip_hash": skip_hash_check}
            st.up_since = min(st.up_since, time.time() - window)

    # --- etcd membership (multi-node; sandbox/membership.py) -------------------------------------------------

    def _controlplane(self, st: State, api: str) -> None:
        """machinehelper.CheckControlplane (internal/app/internal/machinehelper/machinehelper.go:23-38)."""
        if st.machine_type not in ("controlplane", "init"):
            raise NodeError("Unimplemented", f"{api} is only available on control plane nodes")

    def machine_type(self, addr: str, auth: Auth, *, node: str | None = None) -> str:
        with self.locked() as st:
            self._check_access(st, addr, auth, ROLES_READ, node=node)
            return st.machine_type

    def etcd_members(self, addr: str, auth: Auth, *, node: str | None = None) -> list[dict]:
        """EtcdMemberList as `talosctl etcd members` sends it (QueryLocal): this node's own etcd, WithRequireLeader
        (v1alpha1_server.go:1817-1862; roles admin/operator/reader/etcd:backup, machined.go:74)."""
        with self.locked() as st:
            self._check_access(st, addr, auth, ROLES_ETCD_INFO, node=node)
            self._controlplane(st, "member list")
            running = self._etcd_alive(st)
        if not running:
            # machined's etcd client dials without blocking and calls with WaitForReady (etcd v3.6.12
            # client/v3/options.go:26-29, client.go:320-331): the call waits for an etcd that is not there.
            raise SnapshotHangs()
        try:
            return etcd.member_list(self.info.etcd_endpoint, require_leader=True)
        except etcd.EtcdFailure as exc:
            raise NodeError("Unavailable", str(exc)) from exc

    def etcd_remove_member(self, addr: str, auth: Auth, member_id: int, *, node: str | None = None) -> None:
        """EtcdRemoveMemberByID (v1alpha1_server.go:1866-1893): through a client to the control-plane nodes,
        require leader; an unknown id is NotFound."""
        from sandbox import membership

        with self.locked() as st:
            self._check_access(st, addr, auth, ROLES_ADMIN, node=node)
            self._controlplane(st, "etcd remove member")
        try:
            membership.cluster_call(self, lambda ep: etcd.member_remove(ep, member_id))
        except etcd.EtcdFailure as exc:
            if "member not found" in str(exc):
                raise NodeError("NotFound", f"failed to remove member {member_id}: {exc}") from exc
            raise NodeError("Unknown", f"failed to remove member: failed to remove member {member_id}: {exc}") \
                from exc

    def etcd_leave(self, addr: str, auth: Auth, *, node: str | None = None) -> None:
        """EtcdLeaveCluster (v1alpha1_server.go:1896-1920, internal/pkg/etcd/etcd.go LeaveCluster): remove this
        node's member, stop etcd, delete its data. The node then waits in the join loop (empty data)."""
        from sandbox import membership

        with self.locked() as st:
            self._check_access(st, addr, auth, ROLES_ADMIN, node=node)
            self._controlplane(st, "etcd leave")
            try:
                membership.leave(self, st)
            except etcd.EtcdFailure as exc:
                raise NodeError("Unknown", f"failed to leave cluster: {exc}") from exc
            st.join_tried_at = time.time()  # its join loop starts after the next retry interval

    def etcd_status(self, addr: str, auth: Auth, *, node: str | None = None) -> dict:
        """EtcdStatus of this node's member (Maintenance.Status of the local etcd)."""
        with self.locked() as st:
            v = self._check_access(st, addr, auth, ROLES_ETCD_INFO, node=node)
            self._controlplane(st, "etcd status")
        if not v.etcd_running:
            raise SnapshotHangs()  # as etcd_members
        try:
            return etcd.status(self.info.etcd_endpoint)
        except etcd.EtcdFailure as exc:
            raise NodeError("Unknown", str(exc)) from exc

    # --- the instance (multi-node sandbox helpers) ---------------------------------------------------------

    def lose(self, *, disk: bool = False) -> None:
        """The instance stops (``disk=False``: powered off, its disks kept) or is terminated with its disks
        (``disk=True``): unreachable, its etcd stopped; with the disks, the etcd data and the machine config go."""
        with self.locked(settle=False) as st:  # whatever it was doing stops with it
            self._stop_etcd(st)
            st.stage, st.timeline, st.target, st.bootstrap = "halted", [], None, None
            st.learner_id = None
            st.lost = "terminated" if disk else "power"
            if disk:
                shutil.rmtree(self.paths.etcd_data, ignore_errors=True)
                shutil.rmtree(self.paths.recover_dir, ignore_errors=True)
                self.paths.machine_config.unlink(missing_ok=True)
                st.configured, st.etcd_initial_cluster, st.join_waiting = False, None, None

    def replace(self) -> None:
        """A new instance with the same private IP (the HA stack pins each node's address), configured by `pulumi up`
        (its machine config applied), an empty etcd: it boots and joins (or waits for a bootstrap)."""
        with self.locked(settle=False) as st:  # the old instance's state does not matter
            self._stop_etcd(st)
            shutil.rmtree(self.paths.etcd_data, ignore_errors=True)
            shutil.rmtree(self.paths.recover_dir, ignore_errors=True)
            self.paths.machine_config.parent.mkdir(parents=True, exist_ok=True)
            self.paths.machine_config.write_text(self.paths.controlplane_config_text())
            now = time.time()
            r = float(self.info.reboot_seconds)
            st.stage, st.configured, st.bootstrap, st.etcd_health, st.lost = "running", True, None, "?", None
            st.etcd_initial_cluster, st.learner_id, st.join_waiting = None, None, None
            st.timeline, st.target = [[now, "down"], [now + 0.85 * r, "booting"], [now + r, "final"]], "running"
            st.etcd_events = []
        faults.save(self.paths.faults, {})

    def k8s_problem(self, expected_ips: list[str]) -> tuple[int, str] | None:
        """The first failing Kubernetes node check of ``talosctl health`` (sandbox/kube.py), as (index in
        sandbox.talosctl.HEALTH_CHECKS, message), or None."""
        endpoint = self.info.etcd_endpoint
        if self.multi:  # the Kubernetes API behind the cluster endpoint reads any member with a leader
            from sandbox import membership

            endpoint = membership.answering_endpoint(self.cluster(), leader=True) or endpoint
        try:
            nodes = kube.list_nodes(endpoint)
        except etcd.EtcdFailure as exc:
            return 8, str(exc)
        why = kube.nodes_reported(nodes, expected_ips)
        if why:
            return 8, why  # "waiting for all k8s nodes to report"
        live = [n.info.hostname for n in self.cluster() if n is self or n.peek().etcd_running]
        why = kube.nodes_ready(nodes, live if self.multi else self.info.hostname)
        if why:
            return 11, why  # "waiting for all k8s nodes to report ready"
        return None

    def health(self) -> tuple[bool, str]:
        """(healthy, reason) as the server-side health check sees it; no access check (talosctl checks first)."""
        with self.locked() as st:
            v = self.view(st)
        if self.faults().get("unreachable") or not v.reachable:
            return False, "connection refused"
        if self.faults().get("health_never"):
            return False, "etcd is unhealthy: injected fault health_never"
        if not v.etcd_running:
            return False, f"service \"etcd\" not in expected state \"Running\": current state [{v.etcd_state}]"
        if v.phase != "running":
            return False, f"node is in stage {v.stage}"
        if self.multi:
            # Talos's etcd health check is a quorum read (services/etcd.go HealthFunc -> ValidateQuorum): a member
            # without a leader fails it at once; etcd's /health answers the same ("RAFT NO LEADER").
            why = etcd.health_reason(self.info.etcd_client_port, host=self.info.etcd_host)
            return why is None, (f"{self.info.etcd_endpoint} is healthy" if why is None
                                 else f"{self.info.private_ip}: etcd is unhealthy: {why}")
        ok, line = etcd.endpoint_health(self.info.etcd_endpoint)
        if not ok and etcd.alarms(self.info.etcd_endpoint):
            # etcdctl calls an etcd with an active alarm unhealthy; Talos's etcd health check is a quorum read
            # (services/etcd.go:252-275, internal/pkg/etcd/etcd.go ValidateQuorum), which an alarm does not fail.
            return True, line
        return ok, line
