"""The restore journal: what a half-done restore has already done, so running it again continues instead of starting
over. One JSON file under ``.talos/``; this module is the pure record and its JSON form, ``dr.adapters.journal_file``
reads and writes it (atomically and private, 0600, through ``dr.adapters.fsutil``).

The journal is a record, not the truth: ``dr.restore`` always judges the next step by the node's actual state and
uses the journal only to tell "this restore's own reset" from "someone else's data" (see ``dr.core.restore_plan``), and
never as a stand-in for this run's confirmation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dr.core.errors import ConfigError
from dr.core.timefmt import iso_utc

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

# A three-node restore (dr.core.ha_plan) records per-node steps as ``<step>@<private IP>`` (``reset@10.0.1.5``,
# ``joined@10.0.2.5``) and the one node it bootstraps in ``bootstrap_target`` (with the step ``bootstrap_target``),
# written before the bootstrap call and never changed afterwards.
BOOTSTRAP_TARGET = "bootstrap_target"
JOINED = "joined"
HA_ORDER = (CONFIRMED, SAFETY_SNAPSHOT, RESET, BOOTSTRAP_TARGET, BOOTSTRAP_STARTED, BOOTSTRAPPED, JOINED, HEALTHY,
            KUBECONFIG)


def on(step: str, node: str) -> str:
    """The journal key of a per-node step: ``reset@10.0.1.5``."""
    return f"{step}@{node}"


def now_stamp() -> str:
    """The current UTC time as the journal records it."""
    return iso_utc(datetime.now(UTC))


@dataclass
class Journal:
    """One restore in progress. ``steps`` maps a step name to the UTC time it finished."""

    spec: str  # the snapshot, resolved: a path or an s3:// URI (never "latest", which moves when a newer one lands)
    snapshot_path: str  # the verified local file
    snapshot_sha256: str  # SHA-256 of the snapshot's content (its trailer): identifies the snapshot
    snapshot_origin: str  # resolved path or s3 URI
    node: str
    cluster: str
    wipe_state: bool = False
    started_at: str = field(default_factory=now_stamp)
    updated_at: str = field(default_factory=now_stamp)
    steps: dict[str, str] = field(default_factory=dict)
    safety_snapshot: str | None = None
    flags: list[str] = field(default_factory=list)  # the command line's flags, repeated by every resume hint
    bootstrap_target: str | None = None  # three nodes: the one node `bootstrap --recover-from` goes to, ever
    format: int = FORMAT

    def done(self, step: str) -> bool:
        return step in self.steps

    @property
    def past_point_of_no_return(self) -> bool:
        """This restore has changed the node: reset it, or configured it from maintenance mode."""
        return (RESET in self.steps or CONFIG_APPLIED in self.steps or self.bootstrap_target is not None
                or any(s.startswith(RESET + "@") for s in self.steps))

    def done_on(self, step: str, node: str) -> bool:
        return on(step, node) in self.steps

    @property
    def last_step(self) -> str | None:
        if self.bootstrap_target is None and not any("@" in s for s in self.steps):
            done = [s for s in STEPS if s in self.steps]
            return done[-1] if done else None

        def rank(item: tuple[str, str]) -> tuple[str, int]:
            base = item[0].split("@", 1)[0]
            return item[1], HA_ORDER.index(base) if base in HA_ORDER else -1

        return max(self.steps.items(), key=rank)[0] if self.steps else None


def path_for(talos_dir: Path) -> Path:
    return talos_dir / JOURNAL_NAME


def parse(raw: str, origin: Path) -> Journal:
    """The journal in ``raw`` (the text of the file at ``origin``)."""
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"unknown format {data.get('format') if isinstance(data, dict) else None!r}")
        known = set(Journal.__dataclass_fields__)
        return Journal(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"restore journal {origin} is unreadable ({exc})",
                          "check the node's state by hand (`talosctl -n IP service etcd`), then run the restore "
                          "again with --abandon-previous (it removes the file)") from exc


def dumps(j: Journal) -> str:
    return json.dumps(asdict(j), indent=2, sort_keys=True) + "\n"


# Flags that are about one run only: a resume hint does not repeat them.
ONE_SHOT_FLAGS = ("--abandon-previous",)


def resume_flags(argv: list[str], snapshot: str) -> list[str]:
    """``argv`` without the snapshot argument and the one-shot flags: what a resume must repeat (``--talos-dir``,
    ``--bucket``, ``--outputs-file``, ``--identity``, ``--yes``...: a resume without them would read another
    bucket or stack, or stop at the prompt)."""
    out: list[str] = []
    dropped = False
    for a in argv:
        if not dropped and a == snapshot:
            dropped = True
            continue
        if a in ONE_SHOT_FLAGS:
            continue
        out.append(a)
    return out
