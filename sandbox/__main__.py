"""``python -m sandbox up|down|status [--dir DIR]``: the local stand-in for the cluster; ``keys``, ``put``,
``delete``, ``break`` and ``mend`` make a disaster by hand (docs/SANDBOX.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from sandbox.api import Sandbox, SandboxError

DEFAULT_DIR = ".sandbox"


def python() -> str:
    """The interpreter running this, as the user can type it back (``.venv/bin/python`` from the checkout): a bare
    ``python`` is often not the virtualenv's, and then ``-m sandbox`` fails with ModuleNotFoundError."""
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(Path.cwd()))
    except ValueError:
        return str(exe)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start etcd, the S3 server and the simulated node")
    up.add_argument("--dir", default=DEFAULT_DIR)
    up.add_argument("--reboot-seconds", type=float, default=0.5, help="how long a simulated reboot takes")
    up.add_argument("--bootstrap-not-ready-seconds", type=float, default=0.3,
                    help="how long bootstrap answers FailedPrecondition after the node comes back")
    up.add_argument("--cluster-name", default="talos-sandbox")
    up.add_argument("--nodes", type=int, default=1, choices=(1, 3),
                    help="control-plane nodes: 1 (default) or 3, each with its own addresses, apid and etcd member")
    up.add_argument("--no-s3", action="store_true", help="do not start the S3 server")
    up.add_argument("--apid", choices=("python", "go"), default=None,
                    help="the node's apid: python (follows the simulated node's state; default) or go (the grpc-go "
                         "stand-in, a configured node with etcd up; built by scripts/ensure-go-grpc.sh)")
    here = os.environ.get("TALOS_SANDBOX_DIR") or DEFAULT_DIR  # after `. <dir>/env`, that sandbox
    st = sub.add_parser("status", help="what runs, pids, ports, node stage, key count")
    st.add_argument("--dir", default=here)
    st.add_argument("--json", action="store_true")
    dn = sub.add_parser("down", help="stop everything the sandbox started (idempotent)")
    dn.add_argument("--dir", default=here)
    # Making a disaster by hand: the sandbox's own etcd and fault switches, no etcdctl needed.
    ks = sub.add_parser("keys", help="count (and with --list, print) the keys under a prefix")
    ks.add_argument("prefix", nargs="?", default="/registry/")
    ks.add_argument("--list", action="store_true")
    pt = sub.add_parser("put", help="write a key (a new object, or garbage over an existing one)")
    pt.add_argument("key")
    pt.add_argument("value")
    de = sub.add_parser("delete", help="delete every key under a prefix (e.g. a namespace's objects)")
    de.add_argument("prefix")
    br = sub.add_parser("break", help="etcd: crash-loops as if its data were corrupt (the node still runs); "
                                      "node: stops answering, as if powered off or terminated")
    br.add_argument("what", choices=BREAKS)
    br.add_argument("--node", type=int, default=1, help="which node of a multi-node sandbox (default 1)")
    mn = sub.add_parser("mend", help="clear every fault `break` set (a restore also clears a broken etcd)")
    mn.add_argument("--node", type=int, default=None, help="only this node (default: every node)")
    for sp in (ks, pt, de, br, mn):
        sp.add_argument("--dir", default=here, help=f"the sandbox folder (default $TALOS_SANDBOX_DIR, else {DEFAULT_DIR})")
    args = p.parse_args(argv)

    try:
        if args.command == "up":
            sb = Sandbox.up(
                args.dir,
                reboot_seconds=args.reboot_seconds,
                bootstrap_not_ready_seconds=args.bootstrap_not_ready_seconds,
                cluster_name=args.cluster_name,
                with_s3=not args.no_s3,
                apid=args.apid,
                nodes=args.nodes,
            )
            s = sb.status()
            print(f"sandbox up in {sb.dir}")
            print(f"  etcd      {sb.etcd_endpoint} (pid {s['etcd']['pid']}, {s['etcd']['keys']} keys)")
            if sb.s3_endpoint:
                print(f"  s3        {sb.s3_endpoint} bucket {sb.bucket} (pid {s['s3']['pid']})")
            print(f"  node      {sb.private_ip} (Elastic IP {sb.public_ip}) stage {s['node']['stage']} (talosctl: {sb.talosctl})")
            for m in sb.members[1:]:
                print(f"  node {m.index}    {m.private_ip} (Elastic IP {m.public_ip}) {m.hostname}, apid "
                      f"{m.apid_endpoint}: talosctl -n {m.private_ip} -e {m.public_ip} ...")
            print(f"  apid      {s['apid']['endpoint']} (pid {s['apid']['pid']}): the Talos API on the Elastic IP")
            print(f"  kube-api  {s['kube']['endpoint']} (pid {s['kube']['pid']}): a kube-apiserver stand-in (Nodes, "
                  "Leases)")
            print(f"  outputs   {sb.outputs_file}")
            print(f"use it:     . {sb.env_file}")
            print(f"stop it:    {python()} -m sandbox down --dir {args.dir}")
            return 0
        if args.command == "status":
            s = Sandbox.load(args.dir).status()
            if args.json:
                print(json.dumps(s, indent=2))
            else:
                e, s3, n = s["etcd"], s["s3"], s["node"]
                print(f"sandbox {s['dir']}: {'running' if s['running'] else 'stopped'}")
                print(f"  etcd  pid {e['pid']} {'up' if e['alive'] else 'down'} {e['endpoint']} "
                      f"(peer port {e['peer_port']}) keys {e['keys'] if e['keys'] is not None else '-'}")
                if s3["endpoint"]:
                    print(f"  s3    pid {s3['pid']} {'up' if s3['alive'] else 'down'} {s3['endpoint']} "
                          f"bucket {s3['bucket']}")
                print(f"  node  {n['ip']} stage {n['stage']} {'reachable' if n['reachable'] else 'unreachable'}")
                a = s["apid"]
                print(f"  apid  pid {a['pid']} {'up' if a['alive'] else 'down'} {a['endpoint']}")
                k = s["kube"]
                print(f"  kube  pid {k['pid']} {'up' if k['alive'] else 'down'} {k['endpoint']}")
                for m in s.get("nodes", [])[1:]:
                    print(f"  node {m['index']} {m['ip']} (Elastic IP {m['public_ip']}) stage {m['stage']} "
                          f"{'reachable' if m['reachable'] else 'unreachable'}; etcd pid {m['etcd_pid']} "
                          f"{'up' if m['etcd_alive'] else 'down'}; apid pid {m['apid_pid']} "
                          f"{'up' if m['apid_alive'] else 'down'} {m['apid_endpoint']}")
            return 0
        if args.command == "down":
            try:
                sb = Sandbox.load(args.dir)
            except SandboxError:
                print(f"no sandbox in {args.dir}: nothing to stop")
                return 0
            stopped = sb.down()
            print("stopped " + ", ".join(stopped) if stopped else f"sandbox in {sb.dir} was not running")
            return 0
        return by_hand(args)
    except SandboxError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1
    return 2


BREAKS: dict[str, dict[str, Any]] = {"etcd": {"etcd_fails": "panic: freepages: failed to get all reachable pages (data corrupt, by hand)"},
          "node": {"unreachable": True}}


def by_hand(args: argparse.Namespace) -> int:
    """keys, put, delete, break, mend: change the running sandbox the way a disaster would."""
    sb = Sandbox.load(args.dir)
    if not sb.running():
        raise SandboxError(f"the sandbox in {sb.dir} is not running; start it with "
                           f"`{python()} -m sandbox up --dir {args.dir}`")
    if args.command == "keys":
        keys = sb.keys(args.prefix)
        print(f"{len(keys)} keys under {args.prefix}")
        for k in keys if args.list else ():
            print(f"  {k}")
    elif args.command == "put":
        sb.put(args.key, args.value)
        print(f"wrote {args.key}")
    elif args.command == "delete":
        print(f"deleted {sb.delete_prefix(args.prefix)} keys under {args.prefix}")
    elif args.command == "break":
        sb.set_faults(args.node, **BREAKS[args.what])
        what = (f"the {args.what}" if sb.info.node_count == 1
                else f"the etcd of node {args.node}" if args.what == "etcd" else f"node {args.node}")
        print(f"broke {what}: " + ("etcd crash-loops on the running node (docs/RUNBOOK.md scenario 2)"
                                   if args.what == "etcd" else "the node does not answer (scenario 1)"))
    else:
        sb.clear_faults(args.node)
        print("mended: no faults set" + ("" if args.node is None else f" on node {args.node}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
