"""``talos-dr``: one installed command for every DR job (``[project.scripts]`` in pyproject.toml; `make venv`
installs it). ``python -m dr.<command>`` keeps working (both run the same ``main``), but every message names
the command as ``talos-dr <command>`` (dr/core/spelling.py).

    talos-dr list                     # every snapshot, local and in S3
    talos-dr restore latest           # the 3 a.m. command
    talos-dr completion bash > ~/.local/share/bash-completion/completions/talos-dr
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
from typing import TextIO

from dr.commands import cli
from dr.core import spelling
from dr.core.errors import EXIT_CODES, ExitCode

# name -> (module, one line)
COMMANDS: dict[str, tuple[str, str]] = {
    "restore": ("dr.commands.restore", "put a snapshot back into the node's etcd (asks you to type yes)"),
    "list": ("dr.commands.list", "every snapshot, local and in S3, newest first"),
    "verify": ("dr.commands.verify", "prove a snapshot restores, in a throwaway etcd"),
    "backup": ("dr.commands.backup", "take a verified snapshot now (--save-to-s3 to upload it)"),
    "prune": ("dr.commands.prune", "apply the retention policy now (local; --s3 for the bucket)"),
    "volumes": ("dr.commands.volumes", "the newest EBS snapshots of the data volumes"),
    "rebuild": ("dr.commands.rebuild", "a lost Pulumi stack back from the recovery kit"),
    "status": ("dr.commands.status", "what would be lost now and what will break, OK/WARN/FAIL per line"),
    "show": ("dr.commands.show", "what a snapshot holds, by resource type and namespace"),
    "diff": ("dr.commands.diff", "objects created, deleted and changed between two snapshots (or `live`)"),
    "extract": ("dr.commands.extract", "Secrets and ConfigMaps from a snapshot, as YAML for kubectl apply"),
    "replace-member": ("dr.commands.replace_member", "one lost control-plane member back, no restore (asks you to "
                                                     "type yes)"),
}
EXTRA = {
    "completion": "print a shell completion script: completion bash|zsh|tcsh",
    "exit-codes": "what each exit code means",
}
PROG = spelling.PROG


def usage() -> str:
    width = max(map(len, [*COMMANDS, *EXTRA]))
    lines = [f"usage: {PROG} <command> [options]   ({PROG} <command> -h for its options and examples)", "",
             "Disaster recovery for a single-node Talos cluster on AWS.", "", "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_m, what) in COMMANDS.items()]
    lines += [f"  {name:<{width}}  {what}" for name, what in EXTRA.items()]
    lines += ["", "at 3 a.m.:", f"  {PROG} list", f"  {PROG} verify latest", f"  {PROG} restore latest",
              "", "docs/RUNBOOK.md has every scenario, step by step."]
    return "\n".join(lines) + "\n"


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Each command's own parser (its ``build_parser``), without running it."""
    return {name: importlib.import_module(module).build_parser() for name, (module, _what) in COMMANDS.items()}


def completion_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog=PROG)
    sub = top.add_subparsers(dest="command")
    for name, child in command_parsers().items():
        sp = sub.add_parser(name, help=COMMANDS[name][1], add_help=False)
        for action in child._actions:
            if not isinstance(action, argparse._HelpAction):
                sp._add_action(action)
    sp = sub.add_parser("completion", help=EXTRA["completion"])
    sp.add_argument("shell", choices=("bash", "zsh", "tcsh"))
    sub.add_parser("exit-codes", help=EXTRA["exit-codes"])
    return top


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    try:
        return _main(argv, out=out, err=err)
    except BrokenPipeError:  # `talos-dr exit-codes | head -1`: the reader left; not an error, and no traceback
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit; let it go nowhere
        return 0


def _main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    from_shell = argv is None  # the console script, not a test calling main([...])
    argv = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    err = err or sys.stderr
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), end="", file=out if argv else err)
        return 0 if argv else int(ExitCode.USAGE)
    name, rest = argv[0], argv[1:]
    if name == "exit-codes":
        for code, (cls, meaning) in EXIT_CODES.items():
            print(f"{int(code):>3}  {code.name:<20} {cls.value:<11} {meaning}", file=out)
        return 0
    if name == "completion":
        import shtab

        shell = rest[0] if rest else "bash"
        if shell not in ("bash", "zsh", "tcsh"):
            print(f"{PROG} completion: unknown shell {shell!r}; use bash, zsh or tcsh", file=err)
            return int(ExitCode.USAGE)
        print(shtab.complete(completion_parser(), shell=shell), file=out)
        return 0
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, [*COMMANDS, *EXTRA], n=1)
        hint = f"; did you mean `{PROG} {close[0]}`?" if close else f"; `{PROG} --help` lists them"
        print(f"{PROG}: unknown command {name!r}{hint}", file=err)
        return int(ExitCode.USAGE)
    if from_shell and name in ("backup", "restore", "verify", "replace-member"):
        cli.sigterm_as_interrupt()
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest, out=out, err=err))


if __name__ == "__main__":
    sys.exit(main())
