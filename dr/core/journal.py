"""The restore journal: what a half-done restore has already done, so running it again continues instead of starting
over. One JSON file under ``.talos/``, written atomically (``.part``, fsync, rename) and private (0600).

The journal is a record, not the truth: ``dr.restore`` always judges the next step by the node's actual state and
uses the journal only to tell "this restore's own reset" from "someone else's data" (see ``dr.core.restore_plan``), and
never as a stand-in for this run's confirmation.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dr.core.errors import ConfigError

JOURNAL_NAME = "restore-journal.json"
FORMAT = 1

# Steps, in order. ``reset`` (or a config applied to a node in maintenance) is the point of no return.
CONFIRMED = "confirmed"
SAFETY_SNAPSHOT = "safety_snapshot"
RESET = "reset"
NODE_BACK = "node_back"
CONFIG_APPLIED = "config_applied"
BOOTSTRAP_STARTED = "bootstrap_started"
BOOTSTRAPPED = "bootstrapped"
HEALTHY = "healthy"
KUBECONFIG = "kubeconfig"
STEPS = (CONFIRMED, SAFETY_SNAPSHOT, RESET, NODE_BACK, CONFIG_APPLIED, BOOTSTRAP_STARTED, BOOTSTRAPPED, HEALTHY,
         KUBECONFIG)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Journal:
    """One restore in progress. ``steps`` maps a step name to the UTC time it finished."""

    spec: str  # what the user asked for: a path, an s3:// URI or "latest"
    snapshot_path: str  # the verified local file
    snapshot_sha256: str  # SHA-256 of the snapshot's content (its trailer): identifies the snapshot
    snapshot_origin: str  # resolved path or s3 URI
    node: str
    cluster: str
    wipe_state: bool = False
    started_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    steps: dict[str, str] = field(default_factory=dict)
    safety_snapshot: str | None = None
    format: int = FORMAT

    def done(self, step: str) -> bool:
        return step in self.steps

    @property
    def past_point_of_no_return(self) -> bool:
        """This restore has changed the node: reset it, or configured it from maintenance mode."""
        return RESET in self.steps or CONFIG_APPLIED in self.steps

    @property
    def last_step(self) -> str | None:
        done = [s for s in STEPS if s in self.steps]
        return done[-1] if done else None


def path_for(talos_dir: Path) -> Path:
    return talos_dir / JOURNAL_NAME


def load(path: Path) -> Journal | None:
    """The journal at ``path``, or None when there is none."""
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"unknown format {data.get('format') if isinstance(data, dict) else None!r}")
        known = set(Journal.__dataclass_fields__)
        return Journal(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"restore journal {path} is unreadable ({exc})",
                          "check the node's state by hand (`talosctl -n IP service etcd`), then run the restore "
                          "again with --abandon-previous (it removes the file)") from exc


def save(path: Path, j: Journal) -> None:
    """Write atomically: a crash leaves either the old journal or the new one, never half of one."""
    j.updated_at = _now()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    part = path.with_name(path.name + ".part")
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(j), f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        part.unlink(missing_ok=True)


def mark(path: Path, j: Journal, step: str) -> None:
    j.steps[step] = _now()
    save(path, j)


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
