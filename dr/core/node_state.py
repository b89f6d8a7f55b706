"""Where the node is, as far as a restore cares: the kinds of state a real node can be in (pure data).

What the words mean on a real node (siderolabs/talos v1.13.9; rows in sandbox/CONFORMANCE.md):

* The machine stage reads ``running`` only once the boot sequence has ended, and that sequence waits for every
  service to be up, etcd included (``v1alpha1_sequencer.go`` StartAllServices; ``machine_status.go``). A node whose
  etcd waits for a bootstrap (after an EPHEMERAL reset) or keeps failing stays ``booting``. So etcd's own service
  state is asked for whenever an authenticated call works, whatever the stage.
* etcd's service states are ``system/events/events.go``'s: Initialized, Preparing, Waiting, Running, Stopping,
  Finished, Failed, Skipped, Starting. ``Preparing`` is its pre-start: brief on every boot, and long when its data
  directory is empty and it sits in the join loop waiting for ``talosctl bootstrap`` (``services/etcd.go``
  buildInitialCluster, up to ``EtcdJoinTimeout``). ``Waiting`` means waiting on conditions (time, network, volumes),
  not "empty". ``Failed`` is also how a refused recovery shows (the snapshot is checked in etcd's pre-start, after
  ``bootstrap`` returned).
* A crash-looping etcd is restarted forever, every 5 s (``runner/restart/restart.go``): its service shows
  ``Waiting`` with health ``Fail`` ("Error running Containerd(etcd), going to restart forever"), not ``Failed``.
* A node in maintenance mode does not know our CA: an authenticated call fails in the TLS handshake with an
  unknown-authority error, an ``--insecure`` one answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from dr.core.errors import DRError

# Kinds of node state.
ETCD_RUNNING = "etcd running"
ETCD_PREPARING = "etcd preparing"  # pre-start: briefly on every boot; for long when it waits for a bootstrap
ETCD_FAILED = "etcd failed"
ETCD_STOPPED = "etcd stopped"  # Finished, Stopping, Skipped: configured, etcd neither runs nor fails
MAINTENANCE = "maintenance"  # no machine config: waits for apply-config --insecure
TRANSITIONING = "transitioning"  # resetting, rebooting, booting with etcd not yet in a state we act on
UNREACHABLE = "unreachable"
REFUSED = "refused"  # answered, but refused us in a way that is not maintenance mode
SETTLED = (ETCD_RUNNING, ETCD_PREPARING, ETCD_FAILED, ETCD_STOPPED, MAINTENANCE)
MOVING_STAGES = ("resetting", "rebooting", "shutting down", "installing", "upgrading")

_KIND_OF_ETCD = {
    "Running": ETCD_RUNNING,
    "Preparing": ETCD_PREPARING,
    "Failed": ETCD_FAILED,
    "Finished": ETCD_STOPPED,
    "Stopping": ETCD_STOPPED,
    "Skipped": ETCD_STOPPED,
}  # Initialized, Waiting, Starting (and anything new): TRANSITIONING


@dataclass(frozen=True)
class NodeState:
    kind: str
    stage: str  # the node's own word (running, booting, maintenance, rebooting ...) or "unreachable"
    etcd: str | None = None  # etcd's service state, when it could be read
    etcd_since: float | None = None  # seconds in that state (age of its newest event), when known
    etcd_message: str = ""  # its newest event's message
    error: DRError | None = None

    def describe(self) -> str:
        if self.kind in (UNREACHABLE, MAINTENANCE):
            return self.kind
        if self.kind == REFUSED:
            return f"refusing our talosconfig ({self.error.message if self.error else 'unknown error'})"
        if self.etcd is None:
            return self.stage
        since = f" for {int(self.etcd_since)}s" if self.etcd_since is not None else ""
        msg = f": {self.etcd_message}" if self.etcd_message and self.etcd in ("Failed", "Preparing") else ""
        return f"{self.stage}, etcd {self.etcd}{since}{msg}"
