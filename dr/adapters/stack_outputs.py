"""Thin adapter for the stack's outputs: the Pulumi Automation API, or a `pulumi stack output --json --show-secrets`
file as the offline alternative (flag, or ``DR_STACK_OUTPUTS_FILE``)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dr.core import outputs as keys
from dr.core.errors import ConfigError

OUTPUTS_FILE_ENV = "DR_STACK_OUTPUTS_FILE"
STACK_ENV = "DR_STACK"
PROJECT_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class StackOutputs:
    values: dict[str, Any]
    source: str  # "stack prod" or "file /path"
    secret_keys: frozenset[str] = field(default_factory=frozenset)

    def get(self, key: str, default: Any = None) -> Any:
        v = self.values.get(key)
        return default if v in (None, "") else v

    def require(self, key: str, why: str) -> Any:
        v = self.get(key)
        if v is None:
            raise ConfigError(
                f"stack output {key!r} is missing from {self.source} (needed {why})",
                "run `pulumi up` so the stack exports it, or pass the value with a flag",
            )
        return v


def load_outputs_file(path: str | Path) -> StackOutputs:
    """Read a file made by `(umask 077; pulumi stack output --json --show-secrets > FILE)`. It holds every secret
    output, so it is refused when group or others have any access to it (as a talosconfig is)."""
    p = Path(path)
    try:
        with open(p, encoding="utf-8") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)  # the file read, not whatever the name points to later
            if mode & 0o077:  # as for the talosconfig: no access at all for group and others (writing one is worse)
                raise ConfigError(f"stack outputs file {p} holds every secret of the stack but group or others "
                                  f"have access to it (mode {mode:04o})",
                                  f"chmod 600 {p}; create such files with `(umask 077; pulumi stack output --json "
                                  "--show-secrets > FILE)`")
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"stack outputs file {p} does not exist",
                          "create it with `(umask 077; pulumi stack output --json --show-secrets > FILE)`, or unset "
                          f"{OUTPUTS_FILE_ENV}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read stack outputs file {p}: {exc.strerror}", "check the path and its permissions") from exc
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"stack outputs file {p} is not JSON ({exc.msg} at line {exc.lineno})",
                          "regenerate it with `(umask 077; pulumi stack output --json --show-secrets > FILE)`") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"stack outputs file {p} is not a JSON object", "regenerate it with `pulumi stack output --json --show-secrets`")
    if any(v == "[secret]" for v in data.values()):
        raise ConfigError(f"stack outputs file {p} has secrets hidden as [secret]",
                          "regenerate it with --show-secrets: `(umask 077; pulumi stack output --json --show-secrets > "
                          "FILE)`")
    return StackOutputs(data, f"outputs file {p}", frozenset(k for k in keys.SECRET_OUTPUTS if k in data))


def load_stack_outputs(stack: str, work_dir: str | Path = PROJECT_DIR) -> StackOutputs:
    """Read a stack's outputs (secrets shown) through the Automation API."""
    try:
        from pulumi import automation as auto
    except ImportError as exc:  # pragma: no cover - pulumi is a runtime dependency
        raise ConfigError("the pulumi Python package is not installed", "run `make venv`") from exc
    try:
        # LocalWorkspace runs `pulumi version` at once (PulumiCommand, pulumi/automation/_cmd.py): a failing or
        # too-old CLI raises CalledProcessError or InvalidVersionError there, before any stack is read.
        ws = auto.LocalWorkspace(work_dir=str(work_dir))
        outs = ws.stack_outputs(stack)
    except auto.InvalidVersionError as exc:
        raise ConfigError(
            f"the Pulumi CLI on PATH cannot be used: {exc}",
            "install a current CLI (https://www.pulumi.com/docs/install/; `pulumi version` shows yours), or pass "
            "--outputs-file FILE made with `pulumi stack output --json --show-secrets`",
        ) from exc
    except subprocess.CalledProcessError as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        last = [ln.strip() for ln in err.splitlines() if ln.strip()]
        detail = f": {last[-1]}" if last else ""
        raise ConfigError(
            f"`pulumi version` failed (exit {exc.returncode}){detail}",
            "check that `pulumi version` runs in this shell, or pass --outputs-file FILE made with "
            "`pulumi stack output --json --show-secrets`",
        ) from exc
    except FileNotFoundError as exc:
        raise ConfigError(
            "the Pulumi CLI was not found on PATH",
            "install it (https://www.pulumi.com/docs/install/) or pass --outputs-file FILE made with "
            "`pulumi stack output --json --show-secrets` on a machine that has it",
        ) from exc
    except auto.StackNotFoundError as exc:
        raise ConfigError(f"Pulumi stack {stack!r} was not found in {work_dir}",
                          "check `pulumi stack ls` and `pulumi login`, then pass --stack NAME") from exc
    except auto.CommandError as exc:
        text = str(exc)
        hint = "check `pulumi whoami` and `pulumi stack ls`"
        if "passphrase" in text.lower():
            hint = "set PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE) for this stack"
        last = [ln.strip() for ln in text.splitlines() if ln.strip() and "stderr" not in ln.lower()]
        raise ConfigError(f"reading outputs of stack {stack!r} failed: {last[-1] if last else 'pulumi error'}",
                          hint) from exc
    if not outs:
        raise ConfigError(f"stack {stack!r} has no outputs", "run `pulumi up` first")
    values = {k: v.value for k, v in outs.items()}
    secret = frozenset(k for k, v in outs.items() if v.secret)
    return StackOutputs(values, f"stack {stack}", secret)


def resolve_outputs(outputs_file: str | None = None, stack: str | None = None) -> StackOutputs:
    """Flag > environment > Automation API on the default stack."""
    path = outputs_file or os.environ.get(OUTPUTS_FILE_ENV)
    if path:
        return load_outputs_file(path)
    return load_stack_outputs(stack or os.environ.get(STACK_ENV) or keys.DEFAULT_STACK)
