"""Where the node is, as far as a restore cares: one probe of the node, turned into a ``NodeState``.

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
from typing import Protocol

from dr.errors import ConfigError, DRError, NodeError, NodeUnreachable, Timeout
from dr.talosctl import ServiceStatus

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


class NodeApi(Protocol):
    """What ``probe`` needs from ``dr.talosctl.Talosctl``."""

    def stage(self, *, insecure: bool = False) -> str: ...

    def service(self, service: str = "etcd") -> ServiceStatus: ...


def probe(t: NodeApi) -> NodeState:
    """Ask the node where it is. Never raises for the node's own state; a missing talosctl still raises."""
    try:
        stage = t.stage()
    except (NodeUnreachable, Timeout) as exc:
        return NodeState(UNREACHABLE, "unreachable", error=exc)
    except ConfigError as exc:  # apid answered but cannot reach the node we named: a settings mistake
        return NodeState(REFUSED, "unknown", error=exc)
    except NodeError as exc:
        try:
            stage = t.stage(insecure=True)
        except (NodeUnreachable, Timeout) as exc2:
            return NodeState(UNREACHABLE, "unreachable", error=exc2)
        except NodeError:
            return NodeState(REFUSED, "unknown", error=exc)
        return NodeState(MAINTENANCE if stage == "maintenance" else TRANSITIONING, stage or "unknown")
    stage = stage or "unknown"
    if stage in MOVING_STAGES:
        return NodeState(TRANSITIONING, stage)
    try:
        svc = t.service("etcd")
    except (NodeUnreachable, Timeout) as exc:
        return NodeState(TRANSITIONING, stage, error=exc)
    except (NodeError, ConfigError) as exc:  # no etcd service yet (early boot), or a transient refusal
        return NodeState(TRANSITIONING, stage, error=exc)
    kind = _KIND_OF_ETCD.get(svc.state, TRANSITIONING)
    if svc.state == "Waiting" and (svc.health == "Fail" or "going to restart" in svc.last_message):
        kind = ETCD_FAILED  # crash loop: the restart policy keeps it Waiting between attempts
    return NodeState(kind, stage, svc.state, svc.since, svc.last_message)
