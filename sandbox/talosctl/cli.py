"""The entry point: dispatch a parsed command, print errors as talosctl does (``Error: ...`` + usage hint for a
command-line error, the bare message for a failed command; exit 1), and log every call to ``<dir>/node/calls.jsonl``."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from sandbox.layout import Paths
from sandbox.talosctl.client import CommandError
from sandbox.talosctl.cluster import cmd_health, cmd_kubeconfig
from sandbox.talosctl.etcd_commands import (
    cmd_etcd_alarm,
    cmd_etcd_leave,
    cmd_etcd_members,
    cmd_etcd_remove_member,
    cmd_etcd_snapshot,
    cmd_etcd_status,
)
from sandbox.talosctl.flags import UsageError, parse
from sandbox.talosctl.lifecycle import cmd_apply_config, cmd_bootstrap, cmd_reset
from sandbox.talosctl.status import cmd_get, cmd_service, cmd_version

HANDLERS = {
    "version": cmd_version,
    "get": cmd_get,
    "service": cmd_service,
    "etcd snapshot": cmd_etcd_snapshot,
    "etcd alarm": cmd_etcd_alarm,
    "etcd members": cmd_etcd_members,
    "etcd remove-member": cmd_etcd_remove_member,
    "etcd leave": cmd_etcd_leave,
    "etcd status": cmd_etcd_status,
    "reset": cmd_reset,
    "apply-config": cmd_apply_config,
    "bootstrap": cmd_bootstrap,
    "health": cmd_health,
    "kubeconfig": cmd_kubeconfig,
}

USAGE = """A CLI for out-of-band management of Kubernetes nodes created by Talos (sandbox simulation)

Usage:
  talosctl [command]

Available Commands (sandbox subset):
  apply-config  Apply a new configuration to a node
  bootstrap     Bootstrap the etcd cluster on the specified node
  etcd snapshot Stream snapshot of the etcd node to the path
  etcd members  Get the list of etcd cluster members
  etcd remove-member  Remove the node from etcd cluster
  etcd leave    Tell nodes to leave etcd cluster
  etcd status   Get the status of etcd cluster member
  get           Get a specific resource or list of resources (machinestatus only)
  health        Check cluster health
  kubeconfig    Download the admin kubeconfig from the node
  reset         Reset a node
  service       Retrieve the state of a service (etcd)
  version       Prints the version

Global Flags:
      --context string       Context to be used in command
  -e, --endpoints strings    override default endpoints in Talos configuration
  -n, --nodes strings        target the specified nodes
      --talosconfig string   The path to the Talos configuration file
"""


def _log_call(argv: list[str], code: int, err: str) -> None:
    d = os.environ.get("TALOS_SANDBOX_DIR")
    if not d:
        return
    try:
        path = Paths(d).calls
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"t": time.time(), "argv": argv, "exit": code, "error": err[:500]})
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError:
        pass


def run(argv: list[str]) -> tuple[int, str]:
    try:
        command, values, args = parse(argv)
    except UsageError as exc:
        msg = f"Error: {exc}"
        print(msg, file=sys.stderr)
        print("Run 'talosctl --help' for usage.", file=sys.stderr)
        return 1, msg
    if values.get("help") or not command:
        print(USAGE)
        return 0, ""
    try:
        HANDLERS[command](values, args)
    except CommandError as exc:
        print(str(exc), file=sys.stderr)
        return 1, str(exc)
    return 0, ""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def _term(signum, frame):  # leave no .part behind when stopped
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _term)
    code, err = 1, "interrupted"
    try:
        code, err = run(argv)
    except KeyboardInterrupt:
        code, err = 130, "interrupted"
        print("interrupted", file=sys.stderr)
    finally:
        _log_call(argv, code, err)
    return code
