"""One probe of the node (its stage, then etcd's service state whatever the stage), turned into a
``dr.core.node_state.NodeState``; what the states mean on a real node is written there."""

from __future__ import annotations

from typing import Protocol

from dr.adapters.talosctl import ServiceStatus
from dr.core.errors import ConfigError, NodeError, NodeUnreachable, Timeout
from dr.core.node_state import (
    _KIND_OF_ETCD,
    ETCD_FAILED,
    MAINTENANCE,
    MOVING_STAGES,
    REFUSED,
    TRANSITIONING,
    UNREACHABLE,
    NodeState,
)


class NodeApi(Protocol):
    """What ``probe`` needs from ``dr.adapters.talosctl.Talosctl``."""

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
