"""Command-line parsing, the cobra/pflag way (cmd/talosctl/cmd/root.go): global flags, the sandbox's commands and
their flags, Go's duration and bool syntax. An unknown flag or command, a missing value or a bad boolean is a
``UsageError`` (printed with the usage hint, exit 1)."""

from __future__ import annotations

import re
from dataclasses import dataclass


class UsageError(Exception):
    """A command-line error; talosctl prints it and the usage, exit 1."""


@dataclass(frozen=True)
class Flag:
    name: str
    kind: str  # bool | str | list | duration
    default: object = None
    short: str | None = None


GLOBAL_FLAGS = [
    Flag("talosconfig", "str", ""),
    Flag("nodes", "list", [], "n"),
    Flag("endpoints", "list", [], "e"),
    Flag("context", "str", ""),
    Flag("cluster", "str", ""),
    Flag("help", "bool", False, "h"),
]

COMMANDS: dict[str, dict] = {
    "version": {"flags": [Flag("insecure", "bool", False, "i"), Flag("client", "bool", False),
                          Flag("short", "bool", False)], "args": (0, 0)},
    "get": {"flags": [Flag("output", "str", "table", "o"), Flag("insecure", "bool", False, "i"),
                      Flag("namespace", "str", ""), Flag("watch", "bool", False, "w")], "args": (1, 2)},
    "etcd snapshot": {"flags": [], "args": (1, 1)},
    "etcd alarm": {"flags": [], "args": (1, 1)},
    "etcd members": {"flags": [], "args": (0, 0)},
    "etcd remove-member": {"flags": [], "args": (1, 1)},
    "etcd leave": {"flags": [], "args": (0, 0)},
    "etcd status": {"flags": [], "args": (0, 0)},
    "reset": {"flags": [Flag("graceful", "bool", True), Flag("reboot", "bool", False),
                        Flag("system-labels-to-wipe", "list", []), Flag("user-disks-to-wipe", "list", []),
                        Flag("wipe-mode", "str", "all"), Flag("insecure", "bool", False, "i"),
                        Flag("wait", "bool", True), Flag("timeout", "duration", 1800.0),
                        Flag("debug", "bool", False)], "args": (0, 0)},
    "apply-config": {"flags": [Flag("file", "str", "", "f"), Flag("config-patch", "list", [], "p"),
                               Flag("mode", "str", "auto", "m"), Flag("dry-run", "bool", False),
                               Flag("insecure", "bool", False, "i"), Flag("timeout", "duration", 60.0),
                               Flag("cert-fingerprint", "list", [])], "args": (0, 0)},
    "bootstrap": {"flags": [Flag("recover-from", "str", ""), Flag("recover-skip-hash-check", "bool", False)],
                  "args": (0, 0)},
    "health": {"flags": [Flag("wait-timeout", "duration", 1200.0), Flag("control-plane-nodes", "list", []),
                         Flag("worker-nodes", "list", []), Flag("init-node", "str", ""),
                         Flag("server", "bool", True), Flag("k8s-endpoint", "str", ""),
                         Flag("run-e2e", "bool", False)], "args": (0, 0)},
    "kubeconfig": {"flags": [Flag("force", "bool", False, "f"), Flag("merge", "bool", True, "m"),
                             Flag("force-context-name", "str", "")], "args": (0, 1)},
    "service": {"flags": [], "args": (0, 2)},
}
ALIASES = {"apply": "apply-config"}
PARENTS = {"etcd": ["snapshot", "alarm", "members", "remove-member", "leave", "status"]}

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """Go's ``time.ParseDuration`` (seconds)."""
    s = text.strip()
    if s in ("0",):
        return 0.0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION.match(s, pos)
        if not m:
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    return total


def _parse_bool(text: str) -> bool:
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def _takes_value(flags: list[Flag]) -> set[str]:
    out = set()
    for f in flags:
        if f.kind != "bool":
            out.add(f"--{f.name}")
            if f.short:
                out.add(f"-{f.short}")
    return out


def _find_command(argv: list[str]) -> tuple[str, list[str]]:
    """The command path, skipping flags and the values of flags that take one (known once the command is)."""
    takes_value = _takes_value(GLOBAL_FLAGS)
    words: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            break
        if a.startswith("-") and a != "-":
            if "=" not in a and a in takes_value:
                i += 1
            i += 1
            continue
        words.append(a)
        if len(words) == 1:
            name = ALIASES.get(a, a)
            for cmd, spec in COMMANDS.items():
                if cmd == name or cmd.startswith(name + " "):
                    takes_value |= _takes_value(spec["flags"])
        i += 1
    if not words:
        return "", []
    first = ALIASES.get(words[0], words[0])
    if first in PARENTS:
        if len(words) < 2:
            return first, words[:1]
        if words[1] not in PARENTS[first]:
            raise UsageError(f'unknown command "{words[1]}" for "talosctl {first}"')
        return f"{first} {words[1]}", words[:2]
    if first not in COMMANDS:
        raise UsageError(f'unknown command "{words[0]}" for "talosctl"')
    return first, words[:1]


class _FlagValues:
    """Flag values as pflag sets them: the last one given wins; a list flag's first use replaces its default and
    later uses add to it."""

    def __init__(self, flags: list[Flag]):
        self.by_long = {f.name: f for f in flags}
        self.by_short = {f.short: f for f in flags if f.short}
        # A fresh copy of each list default, so one parse cannot change the next one's.
        self.values: dict[str, object] = {
            f.name: (list(f.default) if f.kind == "list" and isinstance(f.default, list) else f.default) for f in flags
        }
        self._lists: dict[str, list[str]] = {}  # the list flags given so far, by name

    def assign(self, f: Flag, raw: str, shown: str) -> None:
        if f.kind == "bool":
            try:
                self.values[f.name] = _parse_bool(raw)
            except ValueError as exc:
                raise UsageError(f'invalid argument "{raw}" for "{shown}" flag: {exc}') from None
        elif f.kind == "duration":
            try:
                self.values[f.name] = parse_duration(raw)
            except ValueError as exc:
                raise UsageError(f'invalid argument "{raw}" for "{shown}" flag: {exc}') from None
        elif f.kind == "list":
            if f.name not in self._lists:
                self.values[f.name] = self._lists[f.name] = []
            # pflag's StringSlice splits on commas; a config patch (stringArray) does not.
            parts = [raw] if f.name == "config-patch" else [p for p in raw.split(",") if p]
            self._lists[f.name].extend(parts)
        else:
            self.values[f.name] = raw

    def long_flag(self, argv: list[str], i: int) -> int:
        """Take ``--name[=value]`` at ``argv[i]`` (and its value from the next word); the index of the last word used."""
        name, eq, raw = argv[i][2:].partition("=")
        f = self.by_long.get(name)
        if f is None:
            raise UsageError(f"unknown flag: --{name}")
        if not eq:
            if f.kind == "bool":
                raw = "true"
            else:
                if i + 1 >= len(argv):
                    raise UsageError(f"flag needs an argument: --{name}")
                i += 1
                raw = argv[i]
        self.assign(f, raw, f"--{name}")
        return i

    def short_flag(self, argv: list[str], i: int) -> int:
        """Take ``-x``, ``-xVALUE``, ``-x=VALUE`` or ``-x VALUE`` at ``argv[i]``; the index of the last word used."""
        a = argv[i]
        short, rest = a[1], a[2:]
        f = self.by_short.get(short)
        if f is None:
            raise UsageError(f"unknown shorthand flag: '{short}' in {a}")
        shown = f"-{short}, --{f.name}"
        if rest.startswith("="):
            rest = rest[1:]
        if f.kind == "bool":
            self.assign(f, rest or "true", shown)
        else:
            if not rest:
                if i + 1 >= len(argv):
                    raise UsageError(f"flag needs an argument: '{short}' in -{short}")
                i += 1
                rest = argv[i]
            self.assign(f, rest, shown)
        return i


def _check_arg_count(command: str, count: int) -> None:
    lo, hi = COMMANDS[command]["args"]
    if not (lo <= count <= hi):
        if lo == hi:
            raise UsageError(f"accepts {lo} arg(s), received {count}")
        raise UsageError(f"accepts between {lo} and {hi} arg(s), received {count}")


def parse(argv: list[str]) -> tuple[str, dict, list[str]]:
    """(command, flag values, positional args), or ``UsageError``."""
    command, command_words = _find_command(argv)
    if command == "etcd":
        raise UsageError('"talosctl etcd" needs a subcommand: ' + ", ".join(PARENTS["etcd"]))
    flags = list(GLOBAL_FLAGS) + (COMMANDS[command]["flags"] if command else [])
    values = _FlagValues(flags)
    positional: list[str] = []
    to_skip = list(command_words)

    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            positional.extend(argv[i + 1 :])
            break
        if a.startswith("--"):
            i = values.long_flag(argv, i)
        elif a.startswith("-") and a != "-":
            i = values.short_flag(argv, i)
        elif to_skip and a == to_skip[0] or (to_skip and ALIASES.get(a) == to_skip[0]):
            to_skip.pop(0)
        else:
            positional.append(a)
        i += 1
    if command:
        _check_arg_count(command, len(positional))
    return command, values.values, positional
