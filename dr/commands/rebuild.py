"""`python -m dr.rebuild --identity FILE --bucket NAME`: a new Pulumi stack from the recovery kit, when the state is lost.

For an operator who still has the backup bucket and their age identity, and nothing else. In order, each step said
before it runs:

1. find ``recovery/<cluster>.kit.age`` in the bucket (``--cluster`` picks one when the bucket holds several), show its
   version history and who wrote each version, ask before using a kit newer than the last one this machine saw,
   download it checked against the SHA-256 S3 recorded at upload, decrypt it with the identity, and refuse settings
   this talos-dr does not know;
2. ask EC2 which of the kit's data volumes still exist (and whether something still has them attached), and for
   each lost one the newest snapshot of it;
3. create the stack (the kit's, or ``--stack``) in this checkout through the Automation API, or continue one an
   interrupted run created;
4. set its settings from the kit, secret ones as secrets (``bucketName`` pinned to the imported bucket, a lost
   volume's ``snapshotId`` to its newest snapshot; in a kit of several nodes, ``nodeDataVolumeSnapshots`` for that
   node only, from the snapshots of that very volume);
5. ``pulumi import`` the bucket, the surviving data volumes (each under its node's component) and the Talos machine
   secrets, protected;
6. print the ``pulumi up`` and ``python -m dr.restore latest`` that finish the job.

Nothing is deleted, stopped or detached: what is in the way is said, with the command that would clear it.
``--dry-run`` stops after step 2 and prints the plan.

Who wrote a kit: age encrypts to public keys, so a kit that decrypts proves nothing about its author. The
bucket policy lets only the deployers write under ``recovery/`` (docs/VAULT.md), and ``pulumi up``
records the deployer's ARN in each version's ``written-by`` metadata, which is what the history shows. S3 itself does
not record who wrote an object; CloudTrail data events do, when they are turned on. This machine remembers the last
kit version it saw in ``.talos/recovery-kits-seen.json`` (0600).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from dr.adapters import ec2, kit_store, logs, pulumi_stack, s3
from dr.adapters.fsutil import atomic_write
from dr.adapters.stack_outputs import PROJECT_DIR
from dr.commands import cli
from dr.core import rebuild_plan, spelling
from dr.core import recovery_kit as kits
from dr.core.age_keys import AgeKeyError, parse_identities
from dr.core.errors import ConfigError, RecoveryKitError, UntrustedKit
from dr.core.timefmt import iso_utc
from dr.core.volume_snapshots import data_volume_tag_value, newest_completed, newest_completed_of

PROG = spelling.command("rebuild")
IDENTITY_ENV = "DR_AGE_IDENTITY_FILE"
TALOS_DIR_ENV = "DR_TALOS_DIR"


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
    if p.nodes > 1:
        _say(out, f"  {p.nodes} control-plane nodes; their data volumes:")
        for line in p.node_lines or ["(none)"]:
            _say(out, f"    {line}")
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


def _choose_version(history: list[kits.KitVersion], wanted: str | None, where: str) -> kits.KitVersion:
    if not history:
        raise RecoveryKitError(f"{where} has no stored version", "check --bucket and --cluster")
    if wanted is None:
        current = [v for v in history if v.latest]
        return current[0] if current else history[0]
    for v in history:
        if v.version_id == wanted:
            return v
    raise RecoveryKitError(f"{where} has no version {wanted}", "pick one from the history above (--kit-version ID)")


def _confirm_newer(where: str, version: kits.KitVersion, seen: dict, accept: bool, stdin: TextIO, out: TextIO) -> None:
    """Ask before using a kit newer than the one this machine last saw: a new version is what a forger would write."""
    _say(out, f"   This machine last saw version {seen.get('versionId')} of {where} (stored {seen.get('lastModified')}); "
              f"version {version.version_id} (stored {iso_utc(version.last_modified)}, written by "
              f"{version.written_by or 'not recorded'}) is newer.")
    if accept:
        _say(out, "   --accept-newer-kit: using it.")
        return
    hint = ("if a `pulumi up` since then explains it, run again with --accept-newer-kit; otherwise pass "
            f"--kit-version {seen.get('versionId')} and find out who wrote the new one (CloudTrail)")
    if not getattr(stdin, "isatty", lambda: False)():
        raise UntrustedKit(f"{where} is newer than the kit this machine last saw, and there is no terminal to "
                           "confirm it", hint)
    print("   Use this newer kit? Type `yes` (anything else stops): ", end="", file=out, flush=True)
    if stdin.readline().strip() != "yes":
        raise UntrustedKit(f"the newer kit {where} was not accepted; nothing was changed", hint)


def _read_kit(args: argparse.Namespace, client, identities, identity_file: str, talos_dir: Path, out: TextIO,
              stdin: TextIO) -> kits.Kit:
    key = _pick_kit(client, args.bucket, args.cluster)
    where = f"s3://{args.bucket}/{key}"
    history = kit_store.versions(client, args.bucket, key)
    version = _choose_version(history, args.kit_version, where)
    _say(out, f"   {where}: {len(history)} version(s), newest first (`written by` is the ARN `pulumi up` recorded in "
              "the object's metadata; S3 itself does not record the writer, CloudTrail data events do):")
    for line in kits.history_lines(history[:kit_store.HISTORY], version.version_id):
        _say(out, f"     {line}")
    odd = kits.unlike_the_others(history[:kit_store.HISTORY])
    if odd:
        _say(out, f"   warning: {odd}; make sure that was one of your deployers before going on.")
    seen = kit_store.load_seen(talos_dir).get(where)
    if seen is None:
        _say(out, f"   This machine has not seen a kit of {where} before ({talos_dir / kit_store.SEEN_FILE}).")
    elif kits.newer_than_seen(version, seen, history):
        _confirm_newer(where, version, seen, args.accept_newer_kit, stdin, out)
    _say(out, f"   Downloading version {version.version_id} and decrypting it with {identity_file} ...")
    data = kit_store.get_kit(client, args.bucket, key, version)
    if version.checksum_sha256:
        _say(out, "   Its bytes match the SHA-256 S3 recorded when it was uploaded.")
    else:
        _say(out, "   note: S3 recorded no SHA-256 for this version (written before talos-dr asked for one).")
    try:
        kit = kits.unseal(data, identities, where=where)
    except kits.KitError as exc:
        raise RecoveryKitError(str(exc), "use the age identity whose public key is in ageRecipients, or an older "
                                         "version of the kit (--kit-version; the bucket is versioned)") from exc
    unknown = kits.unknown_settings(kit)
    if unknown:
        raise UntrustedKit(f"{where} carries settings this talos-dr does not know: {', '.join(unknown)}",
                           "rebuild with the talos-dr checkout that wrote it, or an older version of the kit "
                           "(--kit-version); a kit anyone can encrypt to your key is not imported on trust")
    kit_store.record_seen(talos_dir, where, version, iso_utc(datetime.now(UTC)))
    return kit


def _newest_snapshots(kit: kits.Kit, ec2_client, volumes: dict, out: TextIO) -> dict[str, str]:
    """The newest completed snapshot of each lost data volume: by volume name in a one-node kit (as always), by
    volume id in a kit of several nodes (each node's own volume: they all share the name)."""
    lost = [v for v in kit.data_volumes
            if volumes.get(v["id"]) is None or volumes[v["id"]].state in rebuild_plan.LOST_STATES]
    if not lost:
        return {}
    tag = data_volume_tag_value(kit.stack, kit.cluster_name)
    names = [v["name"] + (f" of {v['nodeName']}" if "node" in v else "") for v in lost]
    _say(out, f"   Lost: {', '.join(names)}; looking for their newest snapshots (tag {tag}) ...")
    snaps = ec2.data_volume_snapshots(ec2_client, tag)
    newest: dict[str, str] = {}
    for v in lost:
        if kit.per_node:
            found = newest_completed_of(snaps, v["id"],
                                        rebuild_plan.volume_name_tag(kit.cluster_name, int(v["node"]), v["name"]))
            if found:
                newest[v["id"]] = found.snapshot_id
        elif (found := newest_completed(snaps, v["name"])) is not None:
            newest[v["name"]] = found.snapshot_id
    return newest


def run(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO | None = None) -> int:
    """Rebuild the stack from the kit, saying each step on ``out`` (``err`` is unused: every step is narrative)."""
    stdin = stdin or sys.stdin
    work_dir = Path(args.project_dir or PROJECT_DIR).resolve()
    talos_dir = Path(args.talos_dir or os.environ.get(TALOS_DIR_ENV) or work_dir / ".talos")
    identity_file = args.identity or os.environ.get(IDENTITY_ENV)
    if not identity_file:
        raise ConfigError("no age identity given", f"pass --identity FILE (or set {IDENTITY_ENV})")
    identities = _identities(identity_file)
    try:
        mode = os.stat(identity_file).st_mode & 0o777
    except OSError:
        mode = 0
    if mode & 0o077:
        # the identity decrypts every kit and snapshot: a copy others can read is a leaked key
        _say(out, f"warning: {identity_file} is readable by others (mode {mode:o}); `chmod 600 {identity_file}`")

    _say(out, f"1. Looking for the recovery kit in s3://{args.bucket}/{kits.KIT_PREFIX} ...")
    client = s3.make_client(args.region)
    kit = _read_kit(args, client, identities, identity_file, talos_dir, out, stdin)
    _say(out, f"   Kit of cluster {kit.cluster_name}, stack {kit.stack}, region {kit.region}, "
              f"bucket {kit.bucket}, {len(kit.data_volumes)} data volume(s).")
    if kit.bucket != args.bucket:
        _say(out, f"   note: the kit names bucket {kit.bucket}; importing {args.bucket}, where it was found.")
    stack = args.stack or kit.stack

    region = args.region or kit.region
    _say(out, f"2. Asking EC2 ({region}) which data volumes still exist ...")
    ec2_client = ec2.make_client(region)
    volumes = ec2.volumes(ec2_client, [v["id"] for v in kit.data_volumes])
    newest = _newest_snapshots(kit, ec2_client, volumes, out)
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
                              newest_snapshots=newest, stack=stack, state_urns=state_urns,
                              log_group=logs.log_group_exists(region, rebuild_plan.log_group_name(kit.cluster_name)))
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


def build_parser() -> argparse.ArgumentParser:
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
    p.add_argument("--kit-version", help="use this version of the kit (an S3 version id from the history it prints)")
    p.add_argument("--accept-newer-kit", action="store_true",
                   help="use a kit newer than the one this machine last saw without asking")
    p.add_argument("--talos-dir", help=f"local state folder holding the record of kits seen (env {TALOS_DIR_ENV}; "
                                       "default: .talos in the project folder)")
    return p


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None,
         stdin: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.execute(PROG, args, lambda o, e: run(args, o, e, stdin), out=out, err=err)
