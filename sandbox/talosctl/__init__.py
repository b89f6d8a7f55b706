"""A ``talosctl`` look-alike for the simulated node: ``<dir>/bin/talosctl`` runs ``sandbox.talosctl.main``
(``python -m sandbox.talosctl`` works too).

Only the subset the project uses exists (``etcd snapshot``, ``reset``, ``get machinestatus``, ``version``,
``apply-config``/``apply``, ``bootstrap``, ``health``, ``kubeconfig``, ``service``), with talosctl's flags,
defaults, output lines and error texts. Flag parsing is strict like cobra's: an unknown flag or command, a
missing value or a bad boolean fails with exit code 1.

The sandbox directory comes from ``TALOS_SANDBOX_DIR`` (baked into the wrapper script).
Every call is appended to ``<dir>/node/calls.jsonl`` so tests can check what the project ran.

One module per group of behaviours in ``sandbox/CONFORMANCE.md``: ``flags`` (command-line parsing, root.go),
``client`` (talosconfig, target, credentials, error printing: client.go, reply.go), ``status`` (``version``, ``get``,
``service``), ``etcd_commands`` (``etcd snapshot``, ``etcd alarm list``), ``lifecycle`` (``reset``, ``apply-config``,
``bootstrap``), ``cluster`` (``health``, ``kubeconfig``), ``cli`` (dispatch, error printing, the call log).
"""

from sandbox.talosctl.cli import HANDLERS, USAGE, main, run
from sandbox.talosctl.client import CommandError, Target, target
from sandbox.talosctl.cluster import HEALTH_CHECKS
from sandbox.talosctl.flags import COMMANDS, GLOBAL_FLAGS, Flag, UsageError, parse, parse_duration
from sandbox.talosctl.lifecycle import apply_patches
from sandbox.talosctl.status import go_duration

__all__ = [
    "COMMANDS", "GLOBAL_FLAGS", "HANDLERS", "HEALTH_CHECKS", "USAGE", "CommandError", "Flag", "Target", "UsageError",
    "apply_patches", "go_duration", "main", "parse", "parse_duration", "run", "target",
]
