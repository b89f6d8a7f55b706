"""Node lifecycle: ``reset`` (with ``--wait``), ``apply-config`` (local ``--config-patch``), ``bootstrap``
(``--recover-from``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from sandbox import etcd
from sandbox.node import NodeError, TransportError
from sandbox.talosctl.client import CommandError, Target, _rpc, target


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
