"""Thin adapter for what ``dr.rebuild`` asks of Pulumi: create (or select) a stack, read which resources it holds,
set its settings and import resources. The Automation API drives the ``pulumi`` CLI on PATH; settings go through
``pulumi config set`` with the value on stdin, so no secret ever appears on a command line (the Automation API's
``set_all_config`` passes ``--secret KEY=VALUE`` as arguments, which every local user can read in /proc).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dr.core import spelling
from dr.core.errors import ConfigError, RecoveryKitError

_HINT_CLI = ("install the Pulumi CLI (https://www.pulumi.com/docs/install/) and log in to the backend the new stack "
             "should live in (`pulumi login`)")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip() and "stderr" not in ln.lower()]
    return lines[-1] if lines else "pulumi error"


def _command_error(what: str, exc: Exception) -> ConfigError:
    text = str(exc)
    hint = "check `pulumi whoami` and `pulumi stack ls`, then run the same command again"
    if "passphrase" in text.lower():
        hint = "set PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE) for the new stack, then run it again"
    return ConfigError(f"{what} failed: {_last_line(text)}", hint)


@dataclass
class StackHandle:
    """One stack of the project in ``work_dir``, opened through the Automation API."""

    name: str
    work_dir: Path
    created: bool
    _stack: Any

    def resource_urns(self) -> list[str]:
        """The URNs the stack's state holds (``pulumi stack export``)."""
        from pulumi import automation as auto

        try:
            deployment = self._stack.export_stack()
        except auto.CommandError as exc:
            raise _command_error(f"reading the state of stack {self.name}", exc) from exc
        resources = (deployment.deployment or {}).get("resources") or []
        return [r["urn"] for r in resources if isinstance(r, dict) and "urn" in r]

    def set_config(self, values: Mapping[str, tuple[str, bool]]) -> None:
        """``pulumi config set [--secret] KEY`` for each value, the value on stdin (pulumi/pulumi
        pkg/cmd/pulumi/config/config.go ``configSetCmd.Run`` reads it from a stdin that is not a terminal)."""
        for key, (value, secret) in values.items():
            args = ["pulumi", "config", "set", "--stack", self.name, *(["--secret"] if secret else []), key,
                    "--non-interactive"]
            try:
                done = subprocess.run(args, input=value, text=True, capture_output=True, cwd=self.work_dir,
                                      env=os.environ.copy(), timeout=120)
            except FileNotFoundError as exc:
                raise ConfigError("the Pulumi CLI was not found on PATH", _HINT_CLI) from exc
            if done.returncode != 0:
                raise ConfigError(f"`pulumi config set {key}` on stack {self.name} failed (exit {done.returncode}): "
                                  f"{_last_line(done.stderr)}",
                                  f"fix that, then run the same `{spelling.command('rebuild')}` again: it continues where "
                                  "it stopped")

    def import_resources(self, resources: Sequence[Mapping[str, Any]],
                         name_table: Mapping[str, str] | None = None) -> str:
        """``pulumi import --file`` (the Automation API writes the file), protected, no code generated."""
        from pulumi import automation as auto

        try:
            result = self._stack.import_resources(resources=[dict(r) for r in resources],
                                                  name_table=dict(name_table) if name_table else None,
                                                  protect=True, generate_code=False, show_secrets=False)
        except auto.CommandError as exc:
            raise _command_error(f"`pulumi import` into stack {self.name}", exc) from exc
        return str(result.stdout or "")


def open_stack(name: str, work_dir: str | Path) -> StackHandle:
    """Create stack ``name`` in the project at ``work_dir``, or select it when it exists (a re-run)."""
    try:
        from pulumi import automation as auto
    except ImportError as exc:  # pragma: no cover - pulumi is a runtime dependency
        raise ConfigError("the pulumi Python package is not installed", "run `make venv`") from exc
    work = Path(work_dir)
    if not (work / "Pulumi.yaml").is_file():
        raise RecoveryKitError(f"{work} has no Pulumi.yaml", f"run `{spelling.command('rebuild')}` from the talos-dr "
                               "checkout, or pass "
                                                             "--project-dir to it")
    try:
        ws = auto.LocalWorkspace(work_dir=str(work))
        try:
            return StackHandle(name, work, True, auto.Stack.create(name, ws))
        except auto.StackAlreadyExistsError:
            return StackHandle(name, work, False, auto.Stack.select(name, ws))
    except auto.InvalidVersionError as exc:
        raise ConfigError(f"the Pulumi CLI on PATH cannot be used: {exc}", _HINT_CLI) from exc
    except FileNotFoundError as exc:
        raise ConfigError("the Pulumi CLI was not found on PATH", _HINT_CLI) from exc
    except subprocess.CalledProcessError as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise ConfigError(f"`pulumi version` failed (exit {exc.returncode}): {_last_line(err)}", _HINT_CLI) from exc
    except auto.CommandError as exc:
        raise _command_error(f"creating stack {name}", exc) from exc
