"""The one question the restore asks: what will be lost, and a typed ``yes``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

from dr.adapters.etcdlocal import SnapshotStatus
from dr.commands import cli, source
from dr.core import naming, spelling, timefmt
from dr.core.errors import NotConfirmed

if TYPE_CHECKING:
    from dr.commands.verify import Proof

WIPE_EPHEMERAL = ("EPHEMERAL",)
WIPE_STATE_TOO = ("STATE", "EPHEMERAL")


def wipe_labels(wipe_state: bool) -> tuple[str, ...]:
    """Labels the reset wipes. Never empty: a reset without labels may wipe a cloud VM's whole disk (talos.md)."""
    return WIPE_STATE_TOO if wipe_state else WIPE_EPHEMERAL


def describe_content(status: SnapshotStatus, proof: Proof | None = None) -> str:
    if proof is not None and proof.content is not None:
        c = proof.content
        return (f"revision {c.revision}, {c.total_keys} keys ({c.registry_keys} Kubernetes objects), proved by a "
                "restore into a throwaway etcd just now")
    if status.tool:
        return f"revision {status.revision}, {status.total_keys} database entries"
    return "revision and key count unknown (no etcdutl/etcdctl here to read them)"


def describe_verification(fetched: source.Fetched) -> str:
    """Whether `dr.verify` proved this snapshot restores (what a tired person wants to know)."""
    if fetched.entry is not None:
        v = fetched.entry.verification
    else:  # a local file used in place: its bytes were just hashed, so the catalog needs no second read
        from dr.adapters.store import open_store

        v = open_store(fetched.path.parent).verification_of(fetched.path, fetched.digest.file_sha256)
    if v is None:
        return f"not yet (`{spelling.command('verify')}` restores it into a throwaway etcd first, if there is time)"
    keys = f", {v.keys} keys" if v.keys is not None else ""
    return f"yes, by `{spelling.command('verify')}` at {v.verified_at} (revision {v.revision}{keys})"


def confirm(*, fetched: source.Fetched, status: SnapshotStatus, cluster: str, node: str, node_state: str,
            needs_reset: bool, safety: bool, wipe_state: bool, snapshots_dir: str, yes: bool,
            now: datetime, out: TextIO, stdin: TextIO, undoes: list[str] | None = None, proof: Proof | None = None,
            data_dir_copy: bool = False, nodes_reset: list[str] | None = None) -> None:
    """Show what the restore will do and lose; return only on ``--yes`` or a typed ``yes`` (exactly)."""
    # When it was taken is what its name says (dr's and talos-backup's names carry the time); a file named otherwise
    # shows its modification time.
    parsed = (fetched.entry.name if fetched.entry is not None and fetched.entry.name.scheme != "unknown"
              else naming.parse(fetched.path.name))
    taken = parsed.taken_at if parsed else datetime.fromtimestamp(fetched.path.stat().st_mtime, UTC)
    age = timefmt.human_age((now - taken).total_seconds())
    lines = [
        "",
        f"About to restore etcd of cluster {cluster} on node {node} (now {node_state}) from:",
        f"  snapshot  {fetched.path.name}  ({fetched.origin})",
        f"  taken     {taken.strftime('%Y-%m-%d %H:%M:%S UTC')} ({age} ago)",
        f"  content   {describe_content(status, proof)}; {cli.human_size(fetched.digest.size)}"
        + (", no hash trailer (a data-dir copy)" if data_dir_copy else ", SHA-256 trailer verified"),
        f"  verified  {describe_verification(fetched)}",
    ]
    if proof is not None and proof.bumped is not None:
        lines.append(f"  revision  moved forward by {proof.bump} and marked compacted in the copy the node gets "
                     "(etcd's recommended restore): watchers of the old cluster must start over")
    elif proof is not None and proof.not_bumped:
        lines.append(f"  revision  NOT moved forward ({proof.not_bumped}): the cluster's revision goes back to the "
                     "snapshot's")
    if data_dir_copy:
        from dr.commands.verify import DATA_DIR_CONSEQUENCES, DATA_DIR_FLAG

        lines.append(f"  FROM A DATA-DIR COPY ({DATA_DIR_FLAG}):")
        lines += [f"    - {c}" for c in DATA_DIR_CONSEQUENCES]
    for what in (proof.skipped if proof is not None else ()):
        lines.append(f"  NOT PROVED (you passed it over): {what}")
    if needs_reset:
        lines += [
            "Everything written to the cluster after that snapshot was taken is LOST: Kubernetes objects and",
            "Secrets created, changed or deleted since then go back to the snapshot's state.",
            *(undoes or []),
            (f"The node is reset (wiping {' and '.join(wipe_labels(wipe_state))}) and reboots; the cluster is down until "
             "the restore finishes." if nodes_reset is None else
             f"Nodes {', '.join(nodes_reset)} are reset (wiping {' and '.join(wipe_labels(wipe_state))}) and reboot, one "
             "after the other; the cluster is down until the restore finishes."),
            (f"A safety snapshot of the current etcd is saved in {snapshots_dir} first." if safety
             else "No safety snapshot of the current etcd will be taken (etcd is not running, or "
                  "--no-safety-snapshot)."),
        ]
    else:
        lines.append("The node's etcd is empty (nothing on it is lost); it is bootstrapped from the snapshot.")
    print("\n".join(lines), file=out, flush=True)
    if yes:
        print("confirmed by --yes", file=out, flush=True)
        return
    isatty = getattr(stdin, "isatty", lambda: False)
    if not isatty():
        raise NotConfirmed("restore not confirmed: there is no terminal to ask on (stdin is not a tty); "
                           "nothing was changed", "run it in a terminal and type yes, or pass --yes")
    print("Type yes to restore: ", end="", file=out, flush=True)
    answer = stdin.readline()
    if answer.strip() != "yes":
        shown = answer.strip()[:20]
        typed = f"you typed {shown!r}, not 'yes'" if answer else "no answer (end of input)"
        raise NotConfirmed(f"restore not confirmed ({typed}); nothing was changed",
                           "run it again and type yes to proceed")
