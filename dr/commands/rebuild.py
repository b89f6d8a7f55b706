"""`python -m dr.rebuild --identity FILE --bucket NAME`: a new Pulumi stack from the recovery kit, when the state is lost.

For an operator who still has the backup bucket and their age identity, and nothing else. In order, each step said
before it runs:

1. find ``recovery/<cluster>.kit.age`` in the bucket and decrypt it with the identity (``--cluster`` picks one when
   the bucket holds several);
2. ask EC2 which of the kit's data volumes still exist (and whether something still has them attached), and for
   each lost one the newest snapshot of it;
3. create the stack (the kit's, or ``--stack``) in this checkout through the Automation API, or continue one an
   interrupted run created;
4. set its settings from the kit, secret ones as secrets (``bucketName`` pinned to the imported bucket, a lost
   volume's ``snapshotId`` to its newest snapshot);
5. ``pulumi import`` the bucket, the surviving data volumes and the Talos machine secrets, protected;
6. print the ``pulumi up`` and ``python -m dr.restore latest`` that finish the job.

Nothing is deleted, stopped or detached: what is in the way is said, with the command that would clear it.
``--dry-run`` stops after step 2 and prints the plan.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from dr.adapters import ec2, kit_store, pulumi_stack, s3
from dr.adapters.fsutil import atomic_write
from dr.adapters.stack_outputs import PROJECT_DIR
from dr.commands import cli
from dr.core import rebuild_plan, spelling
from dr.core import recovery_kit as kits
from dr.core.age_keys import AgeKeyError, parse_identities
from dr.core.errors import ConfigError, RecoveryKitError
from dr.core.volume_snapshots import data_volume_tag_value, newest_completed

PROG = spelling.command("rebuild")
IDENTITY_ENV = "DR_AGE_IDENTITY_FILE"


def _say(out: TextIO, text: str) -> None:
    print(text, file=out, flush=True)


def _identities(path: str):
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read age identity file {path}: {exc.strerror}",
                          "pass the file `age-keygen -o` wrote (--identity FILE)") from exc
    try:
        return parse_identities(text, where=f"age identity file {path}")
    except AgeKeyError as exc:
        raise ConfigError(str(exc)) from exc


def _pick_kit(client, bucket: str, cluster: str | None) -> str:
    found = kit_store.list_kits(client, bucket)
    if cluster:
        if cluster not in found:
            raise RecoveryKitError(f"s3://{bucket}/{kits.kit_key(cluster)} does not exist"
                                   + (f" (kits found: {', '.join(sorted(found))})" if found else ""),
                                   "check --cluster and --bucket; `pulumi up` writes the kit only when ageRecipients "
                                   "is set")
        return found[cluster]
    if not found:
        raise RecoveryKitError(f"no recovery kit in s3://{bucket}/{kits.KIT_PREFIX}",
                               "check --bucket; `pulumi up` writes recovery/<clusterName>.kit.age only when the stack "
                               "has ageRecipients. Without a kit, follow docs/RUNBOOK.md, scenario 3 (total loss)")
    if len(found) > 1:
        raise RecoveryKitError(f"s3://{bucket}/{kits.KIT_PREFIX} holds kits of {len(found)} clusters "
                               f"({', '.join(sorted(found))})", "pick one with --cluster NAME")
    return next(iter(found.values()))


def _print_plan(out: TextIO, p: rebuild_plan.Plan, work_dir: Path) -> None:
    secret = sum(1 for _v, s in p.config.values() if s)
    _say(out, f"Plan for stack {p.stack} (project {p.project}, in {work_dir}):")
    _say(out, f"  settings: {len(p.config)} ({secret} secret): {', '.join(sorted(p.config))}")
    for item in p.imports:
        _say(out, f"  import:   {item.what} as {item.type} {item.logical_name} (id {item.id if item.type != rebuild_plan.SECRETS_TYPE else 'a 0600 secrets.yaml'})")
    for what in p.skipped:
        _say(out, f"  already in the stack: {what}")
    for note in p.notes:
        _say(out, f"  note:     {note}")
    for blocker in p.blockers:
        _say(out, f"  BLOCKER:  {blocker}")


def _finish(out: TextIO, p: rebuild_plan.Plan) -> None:
    _say(out, "")
    if p.blockers:
        _say(out, "Before `pulumi up`, clear what is marked BLOCKER above. Then finish with:")
    else:
        _say(out, "Done. Finish with (the up creates the network, node, schedule and Argo CD around what was imported;")
        _say(out, "run it from a trusted network: the first config apply is not authenticated):")
    for cmd in p.finish:
        _say(out, f"  {cmd}")


def run(args: argparse.Namespace, out: TextIO) -> int:
    work_dir = Path(args.project_dir or PROJECT_DIR).resolve()
    identity_file = args.identity or os.environ.get(IDENTITY_ENV)
    if not identity_file:
        raise ConfigError("no age identity given", f"pass --identity FILE (or set {IDENTITY_ENV})")
    identities = _identities(identity_file)

    _say(out, f"1. Looking for the recovery kit in s3://{args.bucket}/{kits.KIT_PREFIX} ...")
    client = s3.make_client(args.region)
    key = _pick_kit(client, args.bucket, args.cluster)
    _say(out, f"   Downloading s3://{args.bucket}/{key} and decrypting it with {identity_file} ...")
    try:
        kit = kits.unseal(kit_store.get_kit(client, args.bucket, key), identities,
                          where=f"s3://{args.bucket}/{key}")
    except kits.KitError as exc:
        raise RecoveryKitError(str(exc), "use the age identity whose public key is in ageRecipients, or an older "
                                         "version of the kit (the bucket is versioned)") from exc
    _say(out, f"   Kit of cluster {kit.cluster_name}, stack {kit.stack}, region {kit.region}, "
              f"bucket {kit.bucket}, {len(kit.data_volumes)} data volume(s).")
    if kit.bucket != args.bucket:
        _say(out, f"   note: the kit names bucket {kit.bucket}; importing {args.bucket}, where it was found.")
    stack = args.stack or kit.stack

    region = args.region or kit.region
    _say(out, f"2. Asking EC2 ({region}) which data volumes still exist ...")
    ec2_client = ec2.make_client(region)
    volumes = ec2.volumes(ec2_client, [v["id"] for v in kit.data_volumes])
    newest: dict[str, str] = {}
    lost = [v["name"] for v in kit.data_volumes if volumes.get(v["id"]) is None]
    if lost:
        _say(out, f"   Lost: {', '.join(lost)}; looking for their newest snapshots (tag "
                  f"{data_volume_tag_value(kit.stack, kit.cluster_name)}) ...")
        snaps = ec2.data_volume_snapshots(ec2_client, data_volume_tag_value(kit.stack, kit.cluster_name))
        for name in lost:
            found = newest_completed(snaps, name)
            if found:
                newest[name] = found.snapshot_id

    with tempfile.TemporaryDirectory(prefix="talos-dr-rebuild-") as tmp:
        secrets_file = Path(tmp) / "secrets.yaml"
        state_urns: list[str] = []
        handle = None
        if not args.dry_run:
            _say(out, f"3. Creating stack {stack} in {work_dir} (or continuing it, if an earlier run made it) ...")
            handle = pulumi_stack.open_stack(stack, work_dir)
            state_urns = handle.resource_urns()
            _say(out, f"   {'Created' if handle.created else 'Selected the existing'} stack {stack}; it holds "
                      f"{len(state_urns)} resource(s).")
        p = rebuild_plan.plan(kit, bucket=args.bucket, secrets_file=str(secrets_file), volumes=volumes,
                              newest_snapshots=newest, stack=stack, state_urns=state_urns)
        _print_plan(out, p, work_dir)
        if args.dry_run or handle is None:
            _say(out, "\n--dry-run: nothing was created or changed.")
            return 0
        if any("already holds" in b for b in p.blockers):
            raise RecoveryKitError(f"stack {stack} is not a new stack: {p.blockers[-1]}",
                                   "pass --stack NEW-NAME; this command never deletes or overwrites resources")

        _say(out, f"4. Setting {len(p.config)} settings on stack {stack} (secret ones with --secret, values on stdin) ...")
        handle.set_config(p.config)
        if p.imports:
            # The provider's import reads the bundle from the file named by the import ID; it lives in a private
            # temporary folder only while `pulumi import` runs.
            atomic_write(secrets_file, kit.secrets_bundle, mode=0o600)
            what = "; ".join(i.what for i in p.imports)
            _say(out, f"5. Importing {len(p.imports)} resource(s) into stack {stack}, protected: {what} ...")
            doc = rebuild_plan.import_file(p)
            handle.import_resources(doc["resources"], doc.get("nameTable"))
            _say(out, "   Imported.")
        else:
            _say(out, "5. Nothing left to import.")
    _finish(out, p)
    return 0


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    p = cli.parser(PROG, "Rebuild a lost Pulumi stack from the recovery kit in the backup bucket: decrypt it, create "
                         "the stack, set its settings, import the bucket, the data volumes and the Talos secrets.")
    p.add_argument("--identity", help=f"age identity file (`age-keygen -o`) whose public key is in ageRecipients "
                                      f"(env {IDENTITY_ENV})")
    p.add_argument("--bucket", required=True, help="the backup bucket (it holds recovery/<cluster>.kit.age)")
    p.add_argument("--cluster", help="which kit, when the bucket holds several (its clusterName)")
    p.add_argument("--stack", help="name of the new stack (default: the kit's)")
    p.add_argument("--region", help="AWS region of the bucket and the volumes (default: AWS_REGION for S3, the "
                                    "kit's for EC2)")
    p.add_argument("--project-dir", help="the talos-dr checkout holding Pulumi.yaml (default: this one)")
    p.add_argument("--dry-run", action="store_true", help="read the kit and AWS, print the plan, change nothing")
    args = p.parse_args(argv)
    return cli.run(PROG, lambda: run(args, out), debug=args.debug, err=err)
