"""How every message names a command: as the user runs it, ``talos-dr <command> ...``.

Hints, resume lines, usage lines and help examples all come from :func:`command`, so there is one spelling. (The
``python -m dr.<command>`` entry points still work, but a hint naming them fails with ModuleNotFoundError when the
virtualenv is not active, while ``talos-dr`` is on PATH wherever `make venv` put it.)
"""

from __future__ import annotations

import shlex

PROG = "talos-dr"


def command(name: str, *args: str) -> str:
    """``talos-dr <name> <args...>``, each argument quoted for the shell where it needs it (a snapshot URI, a flag
    value): the line can be pasted back as it is."""
    return " ".join([PROG, name, *map(shlex.quote, args)])
