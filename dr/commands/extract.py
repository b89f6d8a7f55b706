"""`talos-dr extract SNAPSHOT --namespace NS -o DIR`: Secrets and ConfigMaps out of a snapshot, as YAML for
``kubectl apply``: the small disaster ("someone deleted a Secret") without rolling the whole cluster back.

    talos-dr extract latest --namespace demo -o ./restored
    talos-dr extract latest~2 --namespace demo --type secrets --name api-token -o ./restored
    kubectl apply -f ./restored/demo/

Each object is decoded from what etcd holds (dr.core.kubeproto: the ``k8s\\0`` protobuf envelope); Secrets are first
decrypted with the cluster's secretbox key (dr.core.secretbox): from ``--secrets-file`` (a talosctl secrets bundle),
``--from-kit`` (the recovery kit in the bucket, opened with the age identity), or by default the stack's
``talosMachineSecrets`` output. Server-set fields are removed (see dr.core.kubeproto ``for_apply``).

Every object is decoded (and every Secret decrypted) before the first file is written: a wrong key or a damaged
value writes nothing. Files are ``DIR/<namespace>/<secret|configmap>-<name>.yaml``, 0600 from the first byte, written
atomically; an existing file is never overwritten. Secret values never reach the terminal: only names and key names
are printed. Other types in the namespace are listed with why they are not extracted.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import yaml

from dr.adapters import fsutil
from dr.commands import cli
from dr.commands.settings import Resolver, add_common_flags
from dr.commands.show import opened, split_list
from dr.core import inventory, kubeproto, secretbox, spelling
from dr.core import outputs as keys
from dr.core.errors import (
    ConfigError,
    LocalPathError,
    NoSecretsKey,
    NothingMatched,
    Undecodable,
    WrongSecretsKey,
)

PROG = spelling.command("extract")
EXTRACTABLE = {"secrets": "Secret", "configmaps": "ConfigMap"}
WHY_NOT = ("only Secrets and ConfigMaps are extracted: other objects carry state the cluster manages (status, owners, "
           "controllers' fields); re-create them from their manifests, or restore the whole snapshot")
_SAFE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")  # DNS-1123 subdomain: what a Secret's name may be


@dataclass
class Extracted:
    ref: inventory.Ref
    obj: dict
    path: Path
    decrypted: bool


def load_key(args, r: Resolver, err: TextIO) -> tuple[bytes, str]:
    """(32-byte key, where it came from)."""
    if args.secrets_file:
        path = Path(args.secrets_file)
        try:
            bundle = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise LocalPathError(f"cannot read {path}: {exc.strerror}", "name a talosctl secrets bundle "
                                                                        "(secrets.yaml)") from exc
        except yaml.YAMLError as exc:
            raise NoSecretsKey(f"{path} is not YAML", "name a talosctl secrets bundle (secrets.yaml)") from exc
        where = str(path)
    elif args.from_kit:
        bundle = _kit_bundle(r, err)
        where = "the recovery kit"
    else:
        raw = r.outputs.get(keys.TALOS_MACHINE_SECRETS)
        if not raw:
            raise NoSecretsKey(f"the stack output {keys.TALOS_MACHINE_SECRETS} is missing, and Secrets need the "
                               "cluster's secretbox key", "pass --secrets-file secrets.yaml (a talosctl secrets "
                               "bundle) or --from-kit --identity FILE, or extract --type configmaps only")
        try:
            bundle = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError as exc:
            raise NoSecretsKey(f"the stack output {keys.TALOS_MACHINE_SECRETS} is not JSON",
                               "pass --secrets-file secrets.yaml instead") from exc
        where = f"stack output {keys.TALOS_MACHINE_SECRETS}"
    secret = ((bundle or {}).get("secrets") or {}).get("secretboxencryptionsecret") if isinstance(bundle, dict) \
        else None
    if not secret:
        raise NoSecretsKey(f"{where} holds no secrets.secretboxencryptionsecret (a cluster made before Talos used "
                           "secretbox encrypts with aescbc, which extract does not read)",
                           "pass --secrets-file with this cluster's talosctl secrets bundle")
    try:
        return secretbox.key_from_secret(str(secret)), where
    except secretbox.BadKey as exc:
        raise NoSecretsKey(f"{where}: {exc}", "pass --secrets-file with this cluster's talosctl secrets bundle") \
            from exc


def _kit_bundle(r: Resolver, err: TextIO) -> dict:
    from dr.adapters import kit_store
    from dr.core import recovery_kit as kits

    client, bucket = r.s3_client(), r.bucket
    found = kit_store.list_kits(client, bucket)
    cluster = r.cluster
    key = found.get(cluster) or (next(iter(found.values())) if len(found) == 1 else None)
    if key is None:
        raise NoSecretsKey(f"no recovery kit for cluster {cluster} in s3://{bucket}/{kits.KIT_PREFIX}",
                           "pass --secrets-file secrets.yaml instead")
    if not r.identities:
        raise NoSecretsKey("--from-kit needs the age identity the kit is encrypted to",
                           "pass --identity FILE (or set DR_AGE_IDENTITY_FILE)")
    print(f"{PROG}: reading the secretbox key from s3://{bucket}/{key}", file=err)
    try:
        kit = kits.unseal(kit_store.get_kit(client, bucket, key), r.identities, where=f"s3://{bucket}/{key}")
        return kits.check_bundle_yaml(kit.secrets_bundle)
    except kits.KitError as exc:
        raise NoSecretsKey(f"the recovery kit cannot be used: {exc}", "pass --secrets-file secrets.yaml instead") \
            from exc


def file_for(out_dir: Path, ref: inventory.Ref) -> Path:
    ns, name = ref.namespace or "", ref.name
    if not (_SAFE.match(ns) and _SAFE.match(name)):
        raise Undecodable(f"{ref} has a name that is not a Kubernetes name; it was not written", "report this")
    return out_dir / ns / f"{EXTRACTABLE[ref.type].lower()}-{name}.yaml"


def decode_one(ref: inventory.Ref, value: bytes, key_for) -> tuple[dict, bool]:
    """(object, whether it was decrypted)."""
    decrypted = False
    if secretbox.is_encrypted(value):
        try:
            value = secretbox.open_value(value, key_for())
        except secretbox.NotSecretbox as exc:
            raise Undecodable(f"{ref} is {exc}; extract reads secretbox only", "restore the whole snapshot, or read "
                              "it with the cluster's own kube-apiserver") from exc
        except secretbox.WrongKey as exc:
            raise WrongSecretsKey(f"{ref}: {exc}: it is not this cluster's key (or the key was rotated after the "
                                  "snapshot); nothing was written", "pass --secrets-file with the secrets bundle of "
                                  "the cluster that took the snapshot") from exc
        decrypted = True
    try:
        if value[:1] == b"{":  # JSON, as a hand-made cluster or custom tooling stores it
            obj = json.loads(value)
            if obj.get("kind") != EXTRACTABLE[ref.type]:
                raise kubeproto.DecodeError(f"its JSON says kind {obj.get('kind')!r}")
        else:
            obj = kubeproto.decode(value)
    except (kubeproto.DecodeError, ValueError) as exc:
        raise Undecodable(f"{ref} cannot be decoded: {exc}; nothing was written",
                          "restore the whole snapshot instead, and report this") from exc
    return obj, decrypted


def collect(reader, namespace: str, types: set[str], names: set[str], out_dir: Path, key_for
            ) -> tuple[list[Extracted], dict[str, int]]:
    """Every matching object decoded (Secrets decrypted), and the counts of other types in the namespace."""
    picked: list[Extracted] = []
    skipped: dict[str, int] = {}
    for live, value in reader.items(b"/registry/"):
        ref = inventory.parse_key(live.key)
        if ref.namespace != namespace:
            continue
        if ref.type not in EXTRACTABLE:
            skipped[ref.type] = skipped.get(ref.type, 0) + 1
            continue
        if ref.type not in types or (names and ref.name not in names):
            continue
        obj, decrypted = decode_one(ref, value, key_for)
        picked.append(Extracted(ref, kubeproto.for_apply(obj), file_for(out_dir, ref), decrypted))
    return picked, skipped


def print_text(origin: str, namespace: str, picked: list[Extracted], missing: list[str], skipped: dict[str, int],
               key_from: str | None, out_dir: Path, out: TextIO) -> None:
    print(f"from {origin}, namespace {namespace}:", file=out)
    for e in picked:
        data_keys = ", ".join(sorted((e.obj.get("data") or {}).keys())) or "no data"
        how = " (decrypted)" if e.decrypted else ""
        print(f"  wrote {e.path}  {EXTRACTABLE[e.ref.type]} {e.ref.name}{how}: keys {data_keys}", file=out)
    for n in missing:
        print(f"  not found: {n}", file=out)
    if skipped:
        listed = ", ".join(f"{t} {n}" for t, n in sorted(skipped.items()))
        print(f"  not extracted: {listed} ({WHY_NOT})", file=out)
    if key_from:
        print(f"Secrets decrypted with the secretbox key from {key_from}; the files hold their values (0600): keep "
              "them private", file=out)
    print(f"next: kubectl apply -f {out_dir / namespace}/", file=out)


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(PROG, "Write a namespace's Secrets and ConfigMaps from a snapshot as YAML for `kubectl apply` "
                         "(Secrets decrypted with the cluster's secretbox key; values never printed).", examples=(
                             f"{PROG} latest --namespace demo -o ./restored",
                             f"{PROG} latest~1 -n demo --type secrets --name api-token -o ./restored",
                             f"{PROG} latest -n demo -o ./restored --secrets-file secrets.yaml",
                         ))
    p.add_argument("snapshot", help="a name `list` prints, a local file, s3://bucket/key, `latest`, `latest~N`")
    p.add_argument("--namespace", "-n", required=True, metavar="NS", help="the namespace to extract from")
    p.add_argument("--type", "-t", action="append", metavar="TYPE",
                   help="secrets, configmaps or both (default both; repeat or comma-separate)")
    p.add_argument("--name", action="append", metavar="NAME", help="only this object (repeat for several)")
    p.add_argument("-o", "--output-dir", required=True, metavar="DIR",
                   help="where the YAML goes (DIR/<namespace>/<kind>-<name>.yaml, 0600); existing files are never "
                        "overwritten")
    p.add_argument("--secrets-file", metavar="FILE", help="a talosctl secrets bundle (secrets.yaml) holding the "
                                                          "cluster's secretbox key (default: the stack's "
                                                          "talosMachineSecrets output)")
    p.add_argument("--from-kit", action="store_true", help="read the secretbox key from the recovery kit in the "
                                                            "bucket (needs --identity)")
    p.add_argument("--tmp-dir", help="where a downloaded snapshot is kept while it is read (default: $TMPDIR or /tmp)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout (names only, no values)")
    add_common_flags(p)
    return p


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Write the picked Secrets and ConfigMaps of a snapshot as YAML files."""
    r = Resolver(args)
    types = inventory.normalise_types(split_list(args.type) or set(EXTRACTABLE))
    unknown = types - set(EXTRACTABLE)
    if unknown:
        raise ConfigError(f"--type {','.join(sorted(unknown))}: {WHY_NOT}", "use --type secrets,configmaps")
    names = set(args.name or [])
    out_dir = Path(args.output_dir)
    key_cache: list[tuple[bytes, str]] = []

    def key_for() -> bytes:
        if not key_cache:
            key_cache.append(load_key(args, r, err))
        return key_cache[0][0]

    with opened(args.snapshot, r, err, Path(args.tmp_dir) if args.tmp_dir else None) as o:
        picked, skipped = collect(o.reader, args.namespace, types, names, out_dir, key_for)
        origin = o.origin
    if not picked:
        raise NothingMatched(f"no {' or '.join(EXTRACTABLE[t] for t in sorted(types))} in namespace "
                             f"{args.namespace}{' named ' + ', '.join(sorted(names)) if names else ''} in "
                             f"{origin}", f"`talos-dr show {args.snapshot} --namespace {args.namespace}` lists "
                                          "what it holds")
    existing = [e.path for e in picked if e.path.exists() or e.path.is_symlink()]
    if existing:
        raise LocalPathError(f"{existing[0]} already exists ({len(existing)} of the files do); nothing was "
                             "written", "choose an empty -o folder, or move those files away")
    for e in picked:
        e.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = yaml.safe_dump(e.obj, sort_keys=False, default_flow_style=False)
        fsutil.atomic_write(e.path, text, mode=0o600, overwrite=False)
    missing = sorted(names - {e.ref.name for e in picked})
    if args.json:
        doc = {"ok": True, "snapshot": origin, "namespace": args.namespace, "output_dir": str(out_dir),
               "written": [{"type": e.ref.type, "name": e.ref.name, "file": str(e.path), "decrypted": e.decrypted,
                            "keys": sorted((e.obj.get("data") or {}).keys())} for e in picked],
               "not_found": missing, "not_extracted": {"types": skipped, "why": WHY_NOT}}
        print(json.dumps(doc, indent=2), file=out)
    else:
        print_text(origin, args.namespace, picked, missing, skipped, key_cache[0][1] if key_cache else None,
                   out_dir, out)
    return 0


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.execute(PROG, args, lambda o, e: run(args, o, e), out=out, err=err)
