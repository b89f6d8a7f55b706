"""Fault injection for the simulated node: ``<dir>/node/faults.json``, read at every talosctl call.

Keys (all optional; absent or null means "no fault"/the sandbox default):

``unreachable`` (bool)
    Every call fails like a powered-off node: ``connect: connection refused``.
``reboot_seconds`` (float)
    How long a reboot (after ``reset`` or ``apply-config``) takes; overrides the value given to ``up``.
    Read when the reboot starts.
``never_returns`` (bool)
    A reboot never finishes: the node stays unreachable (``rebooting``) for as long as this is set.
``bootstrap_not_ready_seconds`` (float)
    After the node comes back, ``bootstrap`` answers ``FailedPrecondition`` ("bootstrap is not available yet",
    "time is not in sync yet", "etcd service is not ready for recovery yet") for this long.
``snapshot_truncate_bytes`` (int)
    ``etcd snapshot``: the stream ends this many bytes early without an error; talosctl's size check then fails
    with ``sha256 checksum not found (size N)`` and leaves no file (unless the cut is a multiple of 512).
``snapshot_corrupt`` (bool)
    ``etcd snapshot``: one byte in the middle of the stream is flipped. The size is right, so talosctl saves the
    file; only a SHA-256 trailer check notices.
``die_mid_snapshot`` (bool)
    ``etcd snapshot``: the node dies half-way through the stream (``rpc error: code = Unavailable ... EOF``);
    no file is left. The node itself stays up (it restarts at once).
``snapshot_delay_seconds`` (float)
    ``etcd snapshot``: wait this long before the first byte (to test timeouts, locks and Ctrl-C).
``snapshot_throttle_bytes_per_second`` (int)
    ``etcd snapshot``: stream no faster than this.
``health_never`` (bool)
    ``health`` never passes (etcd reports unhealthy) until its ``--wait-timeout``.
``etcd_fails`` (str)
    etcd's process keeps failing (data corrupt on the node): the service is restarted forever and shows
    ``Waiting`` with health ``Fail`` ("Error running Containerd(etcd), going to restart forever: ...",
    runner/restart/restart.go). The stage stays ``booting`` if it happens at boot, ``running`` if after. While set,
    ``etcd snapshot`` hangs (the node's etcd client waits with no deadline). A reset that wipes EPHEMERAL (etcd's
    data) clears it.
``etcd_start_seconds`` (float)
    How long after an accepted ``bootstrap`` etcd's new runner takes to reach its pre-start (the recovery and its
    hash check) and start (default 0.2).
``etcd_image_pull_fails`` (int)
    The next N pulls of etcd's image in its pre-start fail (counted down), before the snapshot is read: etcd shows
    ``Failed: Failed to run pre stage: failed to pull image ...`` (services/etcd.go:106-115).
``bootstrap_fails`` (str)
    ``bootstrap`` fails with ``rpc error: code = Internal desc = <value>`` after all its checks pass, without
    touching etcd.
"""

from __future__ import annotations

import json
from pathlib import Path

from dr.adapters.fsutil import atomic_write

KEYS = {
    "unreachable": bool,
    "reboot_seconds": float,
    "never_returns": bool,
    "bootstrap_not_ready_seconds": float,
    "snapshot_truncate_bytes": int,
    "snapshot_corrupt": bool,
    "die_mid_snapshot": bool,
    "snapshot_delay_seconds": float,
    "snapshot_throttle_bytes_per_second": int,
    "health_never": bool,
    "bootstrap_fails": str,
    "etcd_fails": str,
    "etcd_image_pull_fails": int,
    "etcd_start_seconds": float,
}


def load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return {}
    return {k: v for k, v in data.items() if v is not None}


def validate(faults: dict) -> dict:
    unknown = sorted(set(faults) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown fault key(s) {unknown}; known: {sorted(KEYS)}")
    out: dict[str, object] = {}
    for k, v in faults.items():
        if v is None:
            continue
        typ = KEYS[k]
        if typ is float and isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(v, typ) and not (typ is int and isinstance(v, bool)):
            out[k] = v
        else:
            raise ValueError(f"fault {k} must be {typ.__name__}, got {v!r}")
    return out


def save(path: Path, faults: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(validate(faults), indent=2, sort_keys=True) + "\n", mode=0o644)
