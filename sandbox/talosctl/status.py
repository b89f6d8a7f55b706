"""Status and output formatting: ``version``, ``get machinestatus``, ``get timestatus``, ``service`` (tabwriter
tables, Go durations)."""

from __future__ import annotations

import json
import time

from sandbox.node import NodeError, TransportError
from sandbox.talosctl.client import CommandError, Target, _rpc, target


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


# pkg/machinery/resources/config/machine_type.go: MachineTypes.config.talos.dev, id machine-type, namespace config,
# the spec marshals to the type's name, one print column "Type" ({@}). No alias ("Aliases: []"), so talosctl
# resolves `machinetype` from the type's lower-cased singular name.
_MACHINETYPE = {"machinetype", "machinetypes", "machinetypes.config.talos.dev"}


def _get_machinetype(values: dict, t: Target) -> None:
    import yaml

    try:
        kind = t.node.machine_type(t.addr, t.auth, node=t.md)
    except (NodeError, TransportError) as exc:
        raise _rpc("error getting resources", exc, t) from None
    doc = {"node": t.shown, "metadata": {"namespace": "config", "type": "MachineTypes.config.talos.dev",
                                         "id": "machine-type", "version": 1, "phase": "running"}, "spec": kind}
    out = values["output"]
    if out == "table":
        print(_tab([("NODE", "NAMESPACE", "TYPE", "ID", "VERSION", "TYPE"),
                    (t.shown, "config", "MachineType", "machine-type", "1", kind)]))
    elif out == "json":
        print(json.dumps(doc, indent=4))
    elif out == "yaml":
        print(yaml.safe_dump(doc, sort_keys=False), end="")
    elif out.startswith("jsonpath"):
        expr = out.partition("=")[2].strip().strip("{}")
        print(kind if expr in (".spec", "@") else _jsonpath(doc, out.partition("=")[2]))
    else:
        raise CommandError(f"output mode {out!r} is not supported")


def cmd_get(values: dict, args: list[str]) -> None:
    import yaml

    resource = args[0].lower()
    if resource in _TIMESTATUS:
        _get_timestatus(values, target(values, insecure=False))
        return
    if resource in _MACHINETYPE:
        _get_machinetype(values, target(values, insecure=False))
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
