"""A ``talosctl`` look-alike for the simulated node: ``<dir>/bin/talosctl`` runs ``python -m sandbox.talosctl``.

Only the subset the project uses exists (``etcd snapshot``, ``reset``, ``get machinestatus``, ``version``,
``apply-config``/``apply``, ``bootstrap``, ``health``, ``kubeconfig``, ``service``), with talosctl's flags,
defaults, output lines and error texts. Flag parsing is strict like cobra's: an unknown flag or command, a
missing value or a bad boolean fails with exit code 1.

The sandbox directory comes from ``TALOS_SANDBOX_DIR`` (baked into the wrapper script).
Every call is appended to ``<dir>/node/calls.jsonl`` so tests can check what the project ran.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sandbox import etcd
from sandbox.layout import Paths
from sandbox.node import Auth, Node, NodeError, SnapshotHangs, TransportError

# ---------------------------------------------------------------------------------------------------------------
# Flags, the cobra/pflag way.


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
PARENTS = {"etcd": ["snapshot", "alarm"]}

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
        raise UsageError('"talosctl etcd" needs a subcommand: snapshot, alarm')
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


# ---------------------------------------------------------------------------------------------------------------
# Client side: talosconfig, target node, credentials.


class CommandError(Exception):
    """A failed command: the message talosctl prints, exit 1."""


@dataclass
class Target:
    node: Node
    addr: str  # the address dialed: the endpoint, or with --insecure the node itself
    auth: Auth
    endpoints: list[str] = field(default_factory=list)
    md: str | None = None  # the `nodes` metadata sent with an authenticated call (apid routes by it)

    @property
    def shown(self) -> str:
        """The node a response names (talosctl prints the node it asked for)."""
        return self.md or self.addr


def _host(addr: str) -> str:
    a = addr.strip()
    if a.startswith("[") and "]" in a:
        return a[1 : a.index("]")]
    if a.count(":") == 1:
        return a.split(":", 1)[0]
    return a


def _load_talosconfig(values: dict) -> tuple[dict, str] | None:
    import yaml

    path = values["talosconfig"] or os.environ.get("TALOSCONFIG") or str(Path.home() / ".talos" / "config")
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CommandError(f"failed to read config: {exc}") from exc
    try:
        cfg = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CommandError(f"failed to parse config: {exc}") from exc
    if not isinstance(cfg, dict):
        raise CommandError("failed to parse config: not a mapping")
    return cfg, path


def target(values: dict, *, insecure: bool) -> Target:
    """Who talosctl dials and what it asks for (cmd/talosctl/pkg/talos/global/client.go): an authenticated call
    dials the first endpoint and names the node in the `nodes` metadata; with --insecure (maintenance mode,
    WithClientMaintenance) it dials the --nodes address itself and ignores the endpoints."""
    node = Node(_sandbox_dir())
    loaded = _load_talosconfig(values)
    ctx: dict = {}
    if loaded is not None:
        cfg, path = loaded
        name = values["context"] or cfg.get("context") or ""
        contexts = cfg.get("contexts") or {}
        if name and name not in contexts:
            raise CommandError(f'context "{name}" is not defined in "talosconfig"')
        ctx = contexts.get(name) or {}
    elif values["context"]:
        raise CommandError(f'context "{values["context"]}" is not defined in "talosconfig"')
    if loaded is None and not insecure:
        path = values["talosconfig"] or os.environ.get("TALOSCONFIG") or str(Path.home() / ".talos" / "config")
        raise CommandError(f"failed to open config file {path!r}: open {path}: no such file or directory")
    nodes = list(values["nodes"]) or list(ctx.get("nodes") or [])
    endpoints = list(values["endpoints"]) or list(ctx.get("endpoints") or [])
    if insecure:
        if not nodes:
            raise CommandError("nodes are not set for the command: please use `--nodes` flag or configuration file "
                               "to set the nodes to run the command against")
        if len(nodes) > 1:
            raise CommandError("this sandbox talosctl supports one node per call; got nodes " + ", ".join(nodes))
        return Target(node, _host(nodes[0]), Auth(insecure=True), endpoints)
    if not endpoints:
        raise CommandError("failed to determine endpoints")
    if not nodes:
        raise CommandError(
            "nodes are not set for the command: please use `--nodes` flag or configuration file to set the nodes "
            "to run the command against"
        )
    if len(nodes) > 1:
        raise CommandError("this sandbox talosctl supports one node per call; got nodes " + ", ".join(nodes))
    return Target(node, _host(endpoints[0]), _auth(node, ctx), endpoints, md=_host(nodes[0]))


def _auth(node: Node, ctx: dict) -> Auth:
    from sandbox.pki import ClusterSecrets, verify_client_cert

    ca, crt = ctx.get("ca"), ctx.get("crt")
    if not ca or not crt or not ctx.get("key"):
        raise CommandError("talosconfig context has no ca, crt or key: a client certificate is required")
    secrets = ClusterSecrets.load(node.paths.secrets)
    roles = None
    try:
        own = _load_talosconfig({"talosconfig": str(node.paths.talosconfig)})
        own_ctx = next(iter((own[0].get("contexts") or {}).values())) if own else {}
    except CommandError:
        own_ctx = {}
    if ca == secrets.os_ca_crt:
        if crt == own_ctx.get("crt"):
            roles = ["os:admin"]
        else:
            try:
                roles = verify_client_cert(base64.b64decode(ca), base64.b64decode(crt))
            except ValueError:
                roles = None
    return Auth(insecure=False, ca=ca, crt=crt, roles=roles)


def _sandbox_dir() -> str:
    d = os.environ.get("TALOS_SANDBOX_DIR")
    if not d:
        raise CommandError("TALOS_SANDBOX_DIR is not set: run the sandbox's bin/talosctl wrapper")
    return d


def _rpc(prefix: str, exc: NodeError | TransportError, t: Target | None = None) -> CommandError:
    """How talosctl prints a failed call. An error from the node behind apid (every authenticated call names a
    node, and apid proxies it: director.go) comes back as metadata, which the client turns into a multierror
    (pkg/machinery/client/reply.go; hashicorp/go-multierror's list format); a failure to reach the endpoint is a
    plain gRPC error."""
    if t is not None and t.md and isinstance(exc, NodeError):
        return CommandError(f"{prefix}: 1 error occurred:\n\t* {t.md}: {exc}\n\n")
    return CommandError(f"{prefix}: {exc}")


# ---------------------------------------------------------------------------------------------------------------
# Commands.


def cmd_version(values: dict, args: list[str]) -> None:
    from sandbox.layout import TALOS_VERSION

    client = [
        "Client:",
        f"\tTag:         {TALOS_VERSION}",
        "\tSHA:         sandbox",
        "\tBuilt:       ",
        "\tGo version:  go1.24.11",
        "\tOS/Arch:     linux/amd64",
    ]
    if values["short"]:
        client = ["Client:", f"Talos {TALOS_VERSION}"]
    print("\n".join(client))
    if values["client"]:
        return
    t = target(values, insecure=values["insecure"])
    try:
        info = t.node.version(t.addr, t.auth, node=t.md)
    except (NodeError, TransportError) as exc:
        raise _rpc("error getting version", exc, t) from None
    if values["short"]:
        print(f"Server:\n\tNODE:        {t.shown}\n\tTag:         {info['tag']}")
        return
    lines = [
        "Server:",
        f"\tNODE:        {t.shown}",
        f"\tTag:         {info['tag']}",
        "\tSHA:         sandbox",
        "\tBuilt:       ",
        "\tGo version:  go1.24.11",
        "\tOS/Arch:     linux/amd64",
        "\tEnabled:     RBAC",
    ]
    print("\n".join(lines))


_MACHINESTATUS = {"machinestatus", "machinestatuses", "machinestatuses.runtime.talos.dev", "ms"}


def _jsonpath(obj: object, expr: str) -> object:
    e = expr.strip()
    if e.startswith("{") and e.endswith("}"):
        e = e[1:-1]
    if not e.startswith("."):
        raise CommandError(f"error parsing jsonpath {expr!r}: unrecognized expression")
    cur = obj
    for part in [p for p in e[1:].split(".") if p]:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            raise CommandError(f"{part} is not found")
    return cur


def cmd_etcd_alarm(values: dict, args: list[str]) -> None:
    """``talosctl etcd alarm list`` (cmd/talosctl/cmd/talos/etcd.go:50-108): a tabwriter(0,0,3,' ') table
    ``MEMBER ALARM``, with ``NODE`` first when the answer carries a hostname (apid forwards every ``nodes`` call on
    a control plane, so it does), member ids as ``%016x`` (resources/etcd/etcd.go:21-23); nothing without alarms."""
    if args[0] != "list":
        raise UsageError(f'unknown command "{args[0]}" for "talosctl etcd alarm" (the sandbox has list)')
    t = target(values, insecure=False)
    try:
        alarms = t.node.etcd_alarms(t.addr, t.auth, node=t.md)
    except (NodeError, TransportError) as exc:
        raise _rpc("error getting alarms", exc, t) from None
    if not alarms:
        return
    rows: list[tuple[str, ...]] = [("NODE", "MEMBER", "ALARM") if t.md else ("MEMBER", "ALARM")]
    for member, alarm in alarms:
        row = (f"{member:016x}", alarm)
        rows.append((t.shown, *row) if t.md else row)
    print(_tab(rows))


_TIMESTATUS = {"timestatus", "timestatuses", "timestatuses.v1alpha1.talos.dev"}


def _get_timestatus(values: dict, t: Target) -> None:
    """``get timestatus`` (pkg/machinery/resources/time/status.go: spec ``synced``, ``epoch``, ``syncDisabled``)."""
    try:
        _cri, synced = t.node.boot_progress(t.addr, t.auth, node=t.md)
    except (NodeError, TransportError) as exc:
        raise _rpc("error getting resources", exc, t) from None
    doc = {"node": t.shown, "metadata": {"namespace": "runtime", "type": "TimeStatuses.v1alpha1.talos.dev",
                                         "id": "node", "version": 1, "phase": "running"},
           "spec": {"synced": synced, "epoch": 1, "syncDisabled": False}}
    out = values["output"]
    if out.startswith("jsonpath"):
        val = _jsonpath(doc, out.partition("=")[2])
        print(str(val).lower() if isinstance(val, bool) else val)
    else:
        print(json.dumps(doc, indent=4))


def cmd_get(values: dict, args: list[str]) -> None:
    import yaml

    resource = args[0].lower()
    if resource in _TIMESTATUS:
        _get_timestatus(values, target(values, insecure=False))
        return
    if resource not in _MACHINESTATUS:
        raise CommandError(f'error getting resources: resource "{args[0]}" is not supported by this sandbox')
    if len(args) > 1 and args[1] != "machine":
        raise CommandError(f'error getting resources: rpc error: code = NotFound desc = resource "{args[1]}" not found')
    t = target(values, insecure=values["insecure"])
    try:
        v = t.node.machine_status(t.addr, t.auth, node=t.md)
    except (NodeError, TransportError) as exc:
        raise _rpc("error getting resources", exc, t) from None
    unmet = [] if v.ready else [{"name": "etcd", "reason": "etcd is not running"}] if v.stage == "running" else []
    doc = {
        "node": t.shown,
        "metadata": {
            "namespace": "runtime",
            "type": "MachineStatuses.runtime.talos.dev",
            "id": "machine",
            "version": 1,
            "owner": "runtime.MachineStatusController",
            "phase": "running",
        },
        "spec": {"stage": v.stage, "status": {"ready": v.ready, "unmetConditions": unmet}},
    }
    out = values["output"]
    if out == "table":
        print(f"{'NODE':<11} {'NAMESPACE':<11} {'TYPE':<15} {'ID':<9} {'VERSION':<9} {'STAGE':<13} READY")
        print(f"{t.shown:<11} {'runtime':<11} {'MachineStatus':<15} {'machine':<9} {'1':<9} {v.stage:<13} "
              f"{str(v.ready).lower()}")
    elif out == "json":
        print(json.dumps(doc, indent=4))
    elif out == "yaml":
        print(yaml.safe_dump(doc, sort_keys=False), end="")
    elif out.startswith("jsonpath"):
        expr = out.partition("=")[2]
        if not expr:
            raise CommandError("jsonpath output requires an expression: -o jsonpath='{.spec.stage}'")
        val = _jsonpath(doc, expr)
        print(json.dumps(val) if isinstance(val, dict | list) else str(val).lower() if isinstance(val, bool) else val)
    else:
        raise CommandError(f"output mode {out!r} is not supported")


def go_duration(seconds: float) -> str:
    """Go's ``time.Duration.Round(time.Second).String()``: ``0s``, ``42s``, ``1m30s``, ``2h0m5s``."""
    n = int(round(max(seconds, 0)))
    h, rem = divmod(n, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m}m{sec}s"
    if m:
        return f"{m}m{sec}s"
    return f"{sec}s"


def _tab(rows: list[tuple[str, ...]]) -> str:
    """Go's tabwriter with minwidth 0, tabwidth 0, padding 3, padchar ' ' (formatters.RenderServicesInfo)."""
    widths = [max(len(r[i]) for r in rows if len(r) > i + 1) + 3 for i in range(max(len(r) for r in rows) - 1)]
    lines = []
    for r in rows:
        cells = [c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)]
        lines.append("".join(cells))
    return "\n".join(lines)


def cmd_service(values: dict, args: list[str]) -> None:
    if args and args[0] == "cri":
        t = target(values, insecure=False)
        try:
            state, _synced = t.node.boot_progress(t.addr, t.auth, node=t.md)
        except (NodeError, TransportError) as exc:
            raise _rpc("error listing services", exc, t) from None
        msg = "Health check successful" if state == "Running" else "Waiting for service \"containerd\" to be \"up\""
        print(_tab([("NODE", t.shown), ("ID", "cri"), ("STATE", state), ("HEALTH", "OK" if state == "Running" else "?"),
                    ("EVENTS", f"[{state}]: {msg} (0s ago)")]))
        return
    if args and args[0] != "etcd":
        raise CommandError(f'error getting service: rpc error: code = NotFound desc = service "{args[0]}" not found')
    t = target(values, insecure=False)
    try:
        v = t.node.etcd_service(t.addr, t.auth, node=t.md)
    except (NodeError, TransportError) as exc:
        raise _rpc("error listing services", exc, t) from None
    state = v.etcd_state
    health = v.etcd_health
    now = time.time()
    events = v.etcd_events or [[now, state, {"Running": "Health check successful"}.get(state, "Running pre state")]]
    if not args:
        # cmd/talosctl/cmd/talos/service.go serviceList
        last = events[-1]
        print(_tab([("NODE", "SERVICE", "STATE", "HEALTH", "LAST CHANGE", "LAST EVENT"),
                    (t.shown, "apid", "Running", "OK", "1h0m0s ago", "Health check successful"),
                    (t.shown, "etcd", state, health, f"{go_duration(now - last[0])} ago", last[2])]))
        return
    # pkg/machinery/formatters/formatters.go RenderServicesInfo: events newest first
    rows: list[tuple[str, ...]] = [("NODE", t.shown), ("ID", "etcd"), ("STATE", state), ("HEALTH", health)]
    if health == "Fail":
        rows.append(("LAST HEALTH MESSAGE", "service not running"))
    label = "EVENTS"
    for ts, st, msg in reversed(events):
        rows.append((label, f"[{st}]: {msg} ({go_duration(now - ts)} ago)"))
        label = ""
    print(_tab(rows))


def _stream_chunks(src: Path, faults: dict):
    """Yield the snapshot as the node streams it, with injected faults."""
    data = src.read_bytes()
    if faults.get("snapshot_corrupt") and data:
        mid = len(data) // 2
        data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]
    cut = int(faults.get("snapshot_truncate_bytes") or 0)
    if cut:
        data = data[: max(0, len(data) - cut)]
    die_at = len(data) // 2 if faults.get("die_mid_snapshot") else None
    delay = float(faults.get("snapshot_delay_seconds") or 0)
    if delay:
        time.sleep(delay)
    bps = int(faults.get("snapshot_throttle_bytes_per_second") or 0)
    chunk = 64 * 1024 if not bps else max(1, min(64 * 1024, bps // 10))
    pos = 0
    while pos < len(data):
        end = min(len(data), pos + chunk)
        if die_at is not None and end >= die_at:
            yield data[pos:die_at]
            raise NodeError("Unavailable", "error reading from server: EOF")
        yield data[pos:end]
        if bps:
            time.sleep((end - pos) / bps)
        pos = end


class _Aborted(Exception):
    pass


def _hang_until_signalled(limit: float = 3600.0) -> None:
    """What talosctl does while the node's etcd client waits for an etcd that is down: nothing, until SIGINT or
    SIGTERM cancels the context (pkg/cli/context.go prints the notice; tests/golden/talosctl/etcd-snapshot-etcd-down.txt).
    The cancelled stream ends as EOF, so talosctl then reports an empty snapshot (client.go ReadStream)."""

    def abort(signum, frame):
        raise _Aborted

    signal.signal(signal.SIGTERM, abort)
    signal.signal(signal.SIGINT, abort)
    try:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            time.sleep(0.2)
    except _Aborted:
        print("Signal received, aborting, press Ctrl+C once again to abort immediately...", file=sys.stderr)


def cmd_etcd_snapshot(values: dict, args: list[str]) -> None:
    dest = Path(args[0])
    part = Path(str(dest) + ".part")
    t = target(values, insecure=False)
    server_tmp = t.node.paths.node / "tmp" / f"snapshot-{os.getpid()}-{uuid.uuid4().hex[:8]}.db"
    server_tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as exc:
            raise CommandError(f"failed to open file: {exc}") from None
        n = 0
        with os.fdopen(fd, "wb") as out:
            try:
                t.node.prepare_snapshot(t.addr, t.auth, server_tmp, node=t.md)
            except (NodeError, TransportError) as exc:
                raise _rpc("error reading file", exc) from None
            except SnapshotHangs:
                _hang_until_signalled()  # then, like talosctl, a cancelled stream reads as an empty file
                raise CommandError("sha256 checksum not found (size 0)") from None
            try:
                for chunk in _stream_chunks(server_tmp, t.node.faults()):
                    out.write(chunk)
                    n += len(chunk)
            except NodeError as exc:
                raise _rpc("error reading snapshot", exc) from None
            out.flush()
            os.fsync(out.fileno())
        if n % 512 != 32:
            raise CommandError(f"sha256 checksum not found (size {n})")
        os.replace(part, dest)
        print(f'etcd snapshot saved to "{dest}" ({n} bytes)')
        try:
            st = etcd.snapshot_status(dest)
        except etcd.EtcdFailure as exc:
            raise CommandError(f"failed to read snapshot status: {exc}") from None
        print(
            f"snapshot info: hash {st['hash']:08x}, revision {st['revision']}, total keys {st['totalKey']}, "
            f"total size {st['totalSize']}"
        )
    finally:
        part.unlink(missing_ok=True)
        server_tmp.unlink(missing_ok=True)


def cmd_reset(values: dict, args: list[str]) -> None:
    if values["wait"] and values["insecure"]:
        raise CommandError("cannot use --wait and --insecure together")
    mode = values["wipe-mode"]
    if mode not in ("all", "system-disk", "user-disks"):
        raise CommandError(f'invalid argument "{mode}" for "--wipe-mode" flag: valid values are all, system-disk, '
                           "user-disks")
    t = target(values, insecure=values["insecure"])
    labels = list(values["system-labels-to-wipe"])
    try:
        t.node.reset(
            t.addr,
            t.auth,
            graceful=values["graceful"],
            reboot=values["reboot"],
            labels=labels,
            wipe_mode=mode,
            user_disks=list(values["user-disks-to-wipe"]),
            node=t.md,
        )
    except (NodeError, TransportError) as exc:
        raise _rpc("error executing reset", exc, t) from None
    if not values["wait"]:
        return
    # Back means up and settled: running, maintenance, or booting with etcd waiting (the sandbox's reading; the
    # project always passes --wait=false, see CONFORMANCE.md "reset").
    _wait_after(t, values["timeout"], want=("halted",) if not values["reboot"] else ("running", "maintenance", "booting"),
                action="reset")


def _wait_after(t: Target, timeout: float, want: tuple[str, ...], action: str) -> None:
    """talosctl's ``--wait``: follow the node's stages until it is back (or off, for a halt)."""
    deadline = time.monotonic() + timeout
    print(f"watching nodes: [{t.shown}]", file=sys.stderr)
    last = None
    while True:
        v = t.node.snapshot_state()
        if v.stage != last:
            print(f"    * {t.shown}: {v.stage}", file=sys.stderr)
            last = v.stage
        if v.phase in want and not v.moving:
            if v.phase != "halted":
                print(f"    * {t.shown}: post check passed", file=sys.stderr)
            return
        if time.monotonic() >= deadline:
            raise CommandError(f"1 error occurred:\n\t* {t.shown}: {action}: context deadline exceeded "
                               f"(node is {v.stage})")
        time.sleep(0.05)


def _merge(base: object, patch: object) -> object:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = _merge(out.get(k), v)
        return out
    return patch


def _json6902(doc: dict, ops: list) -> dict:
    import copy

    doc = copy.deepcopy(doc)
    for op in ops:
        path = [p.replace("~1", "/").replace("~0", "~") for p in op.get("path", "").split("/")[1:]]
        parent = doc
        for p in path[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        last = path[-1]
        kind = op.get("op")
        if kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                else:
                    parent.insert(int(last), op["value"]) if kind == "add" else parent.__setitem__(int(last), op["value"])
            else:
                parent[last] = op["value"]
        elif kind == "remove":
            parent.pop(int(last) if isinstance(parent, list) else last)
        else:
            raise CommandError(f"unsupported JSON patch op {kind!r}")
    return doc


def apply_patches(config_text: str, patches: list[str]) -> str:
    """Apply ``--config-patch`` values (``@file`` or inline YAML/JSON) locally, as talosctl does."""
    import yaml

    if not patches:
        return config_text
    doc = yaml.safe_load(config_text)
    for p in patches:
        text = p
        if p.startswith("@"):
            try:
                text = Path(p[1:]).read_text()
            except OSError as exc:
                raise CommandError(f"failed to read config patch {p}: {exc}") from None
        try:
            patch = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CommandError(f"failed to parse config patch: {exc}") from None
        if isinstance(patch, list):
            doc = _json6902(doc, patch)
        elif isinstance(patch, dict):
            doc = _merge(doc, patch)
        else:
            raise CommandError("failed to parse config patch: not a mapping or a JSON patch")
    return yaml.safe_dump(doc, sort_keys=False)


def cmd_apply_config(values: dict, args: list[str]) -> None:
    if not values["file"]:
        raise CommandError("no filename supplied for configuration")
    mode = values["mode"]
    if mode not in ("auto", "interactive", "no-reboot", "reboot", "staged", "try"):
        raise CommandError(f'invalid argument "{mode}" for "-m, --mode" flag')
    try:
        text = Path(values["file"]).read_text()
    except OSError as exc:
        raise CommandError(f"failed to read configuration from {values['file']!r}: {exc}") from None
    text = apply_patches(text, values["config-patch"])
    t = target(values, insecure=values["insecure"])
    try:
        msg = t.node.apply_config(t.addr, t.auth, text, mode=mode, dry_run=values["dry-run"], node=t.md)
    except (NodeError, TransportError) as exc:
        raise _rpc("error applying new configuration", exc, t) from None
    print(msg, file=sys.stderr)  # stderr: cmd/talosctl/pkg/talos/helpers/mode.go PrintApplyResults


def cmd_bootstrap(values: dict, args: list[str]) -> None:
    """cmd/talosctl/cmd/talos/bootstrap.go: with --recover-from, a local bbolt status check (no size or hash check),
    the upload (EtcdRecover), then Bootstrap. The node checks the snapshot's hash later, in etcd's pre-start."""
    recover = values["recover-from"]
    t = target(values, insecure=False)
    try:
        if recover:
            try:
                st = etcd.snapshot_status(Path(recover))
            except etcd.EtcdFailure as exc:
                raise CommandError(str(exc)) from None
            print(
                f'recovering from snapshot "{recover}": hash {st["hash"]:08x}, revision {st["revision"]}, '
                f"total keys {st['totalKey']}, total size {st['totalSize']}"
            )
            try:
                t.node.etcd_recover(t.addr, t.auth, Path(recover), node=t.md)
            except (NodeError, TransportError) as exc:
                raise _rpc("error uploading snapshot", exc, t) from None
        t.node.bootstrap(t.addr, t.auth, recover=bool(recover), skip_hash_check=values["recover-skip-hash-check"],
                         node=t.md)
    except (NodeError, TransportError) as exc:
        raise _rpc("error executing bootstrap", exc, t) from None


HEALTH_CHECKS = [
    "waiting for etcd to be healthy",
    "waiting for etcd members to be consistent across nodes",
    "waiting for etcd members to be control plane nodes",
    "waiting for apid to be ready",
    "waiting for all nodes memory sizes",
    "waiting for all nodes disk sizes",
    "waiting for kubelet to be healthy",
    "waiting for all nodes to finish boot sequence",
    "waiting for all k8s nodes to report",
    "waiting for all control plane static pods to be running",
    "waiting for all control plane components to be ready",
    "waiting for all k8s nodes to report ready",
    "waiting for kube-proxy to report ready",
    "waiting for coredns to report ready",
    "waiting for all k8s nodes to report schedulable",
]


def cmd_health(values: dict, args: list[str]) -> None:
    t = target(values, insecure=False)
    cps = list(values["control-plane-nodes"]) or [t.shown]
    deadline = time.monotonic() + values["wait-timeout"]
    # The first call must connect and authenticate, as talosctl's server-side check does.
    try:
        t.node.machine_status(t.addr, t.auth, node=t.md)
    except (NodeError, TransportError) as exc:
        raise _rpc("error checking health", exc, t) from None
    print(f"discovered nodes: {json.dumps(cps)}", file=sys.stderr)
    last = None
    while True:
        ok, reason = t.node.health()
        if ok and any(_host(cp) not in t.node.routed_addresses() for cp in cps):
            # pkg/cluster/check/etcd.go EtcdControlPlaneNodesAssertion: etcd advertises the node's routed
            # addresses only (controllers/etcd/spec.go), never the Elastic IP.
            ok = False
            members = json.dumps(list(t.node.routed_addresses()))
            reason = (f"etcd member ips {members} are not subset of control plane node ips "
                      f"{json.dumps([_host(cp) for cp in cps])}")
            if reason != last:
                print(f"{HEALTH_CHECKS[0]}: OK\n{HEALTH_CHECKS[1]}: OK\n{HEALTH_CHECKS[2]}: {reason}", file=sys.stderr)
                last = reason
        elif ok:
            # The Kubernetes checks list the Nodes (sandbox/kube.py): an extra or NotReady Node fails them.
            problem = t.node.k8s_problem([_host(cp) for cp in cps])
            if problem is None:
                for check in HEALTH_CHECKS:
                    print(f"{check}: OK", file=sys.stderr)
                return
            index, why = problem
            reason = f"{HEALTH_CHECKS[index]}: {why}"
            if reason != last:
                for check in HEALTH_CHECKS[:index]:
                    print(f"{check}: OK", file=sys.stderr)
                print(reason, file=sys.stderr)
                last = reason
        elif reason != last:
            print(f"{HEALTH_CHECKS[0]}: {reason}", file=sys.stderr)
            last = reason
        if time.monotonic() >= deadline:
            raise CommandError("healthcheck error: rpc error: code = DeadlineExceeded desc = context deadline exceeded")
        time.sleep(0.1)


def cmd_kubeconfig(values: dict, args: list[str]) -> None:
    import yaml

    t = target(values, insecure=False)
    try:
        text = t.node.kubeconfig(t.addr, t.auth, node=t.md)
    except (NodeError, TransportError) as exc:
        raise _rpc("error retrieving kubeconfig", exc, t) from None
    # No path: merge into ~/.kube/config, or write ./kubeconfig with --merge=false (talosctl's defaults).
    dest = args[0] if args else str(Path.home() / ".kube" / "config") if values["merge"] else "."
    if dest == "-":
        sys.stdout.write(text)
        return
    p = Path(dest)
    if p.is_dir():
        p = p / "kubeconfig"
    if values["force-context-name"]:
        doc = yaml.safe_load(text)
        old = doc["current-context"]
        for c in doc["contexts"]:
            if c["name"] == old:
                c["name"] = values["force-context-name"]
        doc["current-context"] = values["force-context-name"]
        text = yaml.safe_dump(doc, sort_keys=False)
    if p.exists():
        if values["merge"]:
            text = _merge_kubeconfig(p.read_text(), text)
        elif not values["force"]:
            raise CommandError(f'kubeconfig file already exists, use --force to overwrite: "{p}"')
    p.parent.mkdir(parents=True, exist_ok=True)
    part = p.with_name(p.name + ".part")
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(part, 0o600)
        os.replace(part, p)
    finally:
        part.unlink(missing_ok=True)


def _merge_kubeconfig(existing: str, new: str) -> str:
    import yaml

    base = yaml.safe_load(existing) or {}
    add = yaml.safe_load(new)
    for section in ("clusters", "users", "contexts"):
        items = [i for i in (base.get(section) or []) if i["name"] not in {a["name"] for a in add[section]}]
        base[section] = items + add[section]
    base["current-context"] = add["current-context"]
    base.setdefault("apiVersion", "v1")
    base.setdefault("kind", "Config")
    return yaml.safe_dump(base, sort_keys=False)


HANDLERS = {
    "version": cmd_version,
    "get": cmd_get,
    "service": cmd_service,
    "etcd snapshot": cmd_etcd_snapshot,
    "etcd alarm": cmd_etcd_alarm,
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


if __name__ == "__main__":
    sys.exit(main())
