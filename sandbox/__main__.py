"""``python -m sandbox up|down|status [--dir DIR]``: the local stand-in for the cluster."""

from __future__ import annotations

import argparse
import json
import sys

from sandbox.api import Sandbox, SandboxError

DEFAULT_DIR = ".sandbox"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start etcd, the S3 server and the simulated node")
    up.add_argument("--dir", default=DEFAULT_DIR)
    up.add_argument("--reboot-seconds", type=float, default=0.5, help="how long a simulated reboot takes")
    up.add_argument("--bootstrap-not-ready-seconds", type=float, default=0.3,
                    help="how long bootstrap answers FailedPrecondition after the node comes back")
    up.add_argument("--cluster-name", default="talos-sandbox")
    up.add_argument("--no-s3", action="store_true", help="do not start the S3 server")
    st = sub.add_parser("status", help="what runs, pids, ports, node stage, key count")
    st.add_argument("--dir", default=DEFAULT_DIR)
    st.add_argument("--json", action="store_true")
    dn = sub.add_parser("down", help="stop everything the sandbox started (idempotent)")
    dn.add_argument("--dir", default=DEFAULT_DIR)
    args = p.parse_args(argv)

    try:
        if args.command == "up":
            sb = Sandbox.up(
                args.dir,
                reboot_seconds=args.reboot_seconds,
                bootstrap_not_ready_seconds=args.bootstrap_not_ready_seconds,
                cluster_name=args.cluster_name,
                with_s3=not args.no_s3,
            )
            s = sb.status()
            print(f"sandbox up in {sb.dir}")
            print(f"  etcd      {sb.etcd_endpoint} (pid {s['etcd']['pid']}, {s['etcd']['keys']} keys)")
            if sb.s3_endpoint:
                print(f"  s3        {sb.s3_endpoint} bucket {sb.bucket} (pid {s['s3']['pid']})")
            print(f"  node      {sb.private_ip} (Elastic IP {sb.public_ip}) stage {s['node']['stage']} (talosctl: {sb.talosctl})")
            print(f"  apid      {s['apid']['endpoint']} (pid {s['apid']['pid']}): the Talos API on the Elastic IP")
            print(f"  kube-api  {s['kube']['endpoint']} (pid {s['kube']['pid']}): a kube-apiserver stand-in (Nodes, "
                  "Leases)")
            print(f"  outputs   {sb.outputs_file}")
            print(f"use it:     . {sb.env_file}")
            print(f"stop it:    python -m sandbox down --dir {args.dir}")
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
    except SandboxError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
