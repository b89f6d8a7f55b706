"""Settings for every DR command, resolved in one place: flag > environment > stack output > default.

The stack's outputs are read lazily (once) and only when a setting is not given by a flag or the environment, so a
local backup never needs the Pulumi CLI.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from dr.adapters.stack_outputs import OUTPUTS_FILE_ENV, PROJECT_DIR, STACK_ENV, StackOutputs, resolve_outputs
from dr.adapters.talosctl import Talosconfig, Talosctl, load_talosconfig
from dr.core import outputs as keys
from dr.core.errors import ConfigError

ENV_TALOS_DIR = "DR_TALOS_DIR"
ENV_NODE = "DR_NODE"
ENV_ENDPOINT = "DR_ENDPOINT"
ENV_BUCKET = "DR_BUCKET"
ENV_TALOSCONFIG = "TALOSCONFIG"
DEFAULT_TALOS_DIR = ".talos"
PROJECT_FILE = "Pulumi.yaml"  # marks the checkout: `pulumi up` writes .talos/ next to it (__main__.py)
ENV_PREFIX = "DR_SNAPSHOT_PREFIX"
ENV_IDENTITY = "DR_AGE_IDENTITY_FILE"
ENV_RECIPIENTS = "DR_AGE_RECIPIENTS"
DOWNLOADS = "downloads"  # <snapshots>/downloads: what restores fetched from S3 (listed by dr.list, pruned by dr.backup)


def add_common_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by backup, restore, verify and list."""
    g = p.add_argument_group("where the cluster is (flag > environment > stack output > default)")
    g.add_argument("--talos-dir", help=f"local state folder (env {ENV_TALOS_DIR}; default the {DEFAULT_TALOS_DIR}/ "
                                                      f"next to the nearest {PROJECT_FILE}, here or above)")
    g.add_argument("--talosconfig", help=f"talosconfig path (env {ENV_TALOSCONFIG}; default <talos-dir>/talosconfig)")
    g.add_argument("--talos-context", help="talosconfig context (default: the file's current context)")
    g.add_argument("--node", help=f"the node's own (private) IP, named in every call (env {ENV_NODE}; default "
                                  f"the talosconfig's nodes, then stack output {keys.NODE_PRIVATE_IP})")
    g.add_argument("--endpoint", help=f"the address talosctl dials, the node's Elastic IP (env {ENV_ENDPOINT}; "
                                      f"default the talosconfig's endpoints, then stack output {keys.NODE_PUBLIC_IP})")
    g.add_argument("--bucket", help=f"S3 bucket (env {ENV_BUCKET}; default stack output {keys.BUCKET})")
    g.add_argument("--prefix", help=f"key prefix of snapshots in the bucket, e.g. a talos-backup prefix such as "
                                    f"'<cluster>/' (env {ENV_PREFIX}; default stack output {keys.SNAPSHOT_PREFIX}, "
                                    f"{keys.DEFAULT_SNAPSHOT_PREFIX})")
    g.add_argument("--identity", metavar="FILE", help=f"age identity file that decrypts encrypted snapshots (env "
                                                      f"{ENV_IDENTITY}); keep it offline (docs/REFERENCE.md: "
                                                      "Encrypted snapshots)")
    g.add_argument("--stack", help=f"Pulumi stack (env {STACK_ENV}; default {keys.DEFAULT_STACK})")
    g.add_argument("--outputs-file", help=f"`pulumi stack output --json --show-secrets` file instead of the "
                                          f"Automation API (env {OUTPUTS_FILE_ENV})")


@dataclass
class Resolver:
    """Resolves each setting on first use. ``args`` is the parsed command line."""

    args: argparse.Namespace
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def _flag(self, name: str) -> str | None:
        v = getattr(self.args, name, None)
        return v if v not in (None, "") else None

    @cached_property
    def outputs(self) -> StackOutputs:
        return resolve_outputs(self._flag("outputs_file"), self._flag("stack"))

    @cached_property
    def talos_dir(self) -> Path:
        """--talos-dir, else DR_TALOS_DIR, else the .talos/ of the project this folder is in (found, not assumed:
        from another folder the commands say so instead of scattering .talos/ folders or blaming the stack)."""
        given = self._flag("talos_dir") or self.env.get(ENV_TALOS_DIR)
        if given:
            return Path(given)
        return find_talos_dir()

    @cached_property
    def snapshots_dir(self) -> Path:
        return self.talos_dir / "snapshots"

    @cached_property
    def talosconfig_path(self) -> Path:
        return Path(self._flag("talosconfig") or self.env.get(ENV_TALOSCONFIG) or self.talos_dir / "talosconfig")

    @cached_property
    def talosconfig(self) -> Talosconfig:
        return load_talosconfig(self.talosconfig_path, context=self._flag("talos_context"))

    @cached_property
    def node(self) -> str:
        """The node's private IP: what every authenticated call names (apid forwards any other address)."""
        explicit = self._flag("node") or self.env.get(ENV_NODE)
        if explicit:
            return explicit
        cfg = self.talosconfig
        if cfg.nodes:
            return cfg.nodes[0]
        return str(self.outputs.require(keys.NODE_PRIVATE_IP, "to know which node to talk to"))

    @cached_property
    def endpoint(self) -> str:
        """The address talosctl dials: the node's Elastic IP (its private IP is not routed outside the VPC)."""
        explicit = self._flag("endpoint") or self.env.get(ENV_ENDPOINT)
        if explicit:
            return explicit
        cfg = self.talosconfig
        if cfg.endpoints:
            return cfg.endpoints[0]
        try:
            public = self.outputs.get(keys.NODE_PUBLIC_IP)
        except ConfigError:
            public = None
        return str(public) if public else self.node

    @cached_property
    def bucket(self) -> str:
        b = self._flag("bucket") or self.env.get(ENV_BUCKET) or self.outputs.require(keys.BUCKET, "for S3")
        return str(b)

    @cached_property
    def prefix(self) -> str:
        given = getattr(self.args, "prefix", None)
        if given is None:
            given = self.env.get(ENV_PREFIX)
        if given is not None:
            return normalise_prefix(given)
        explicit = self._flag("bucket") or self.env.get(ENV_BUCKET)
        if explicit:
            return keys.DEFAULT_SNAPSHOT_PREFIX
        return normalise_prefix(str(self.outputs.get(keys.SNAPSHOT_PREFIX, keys.DEFAULT_SNAPSHOT_PREFIX)))

    @cached_property
    def downloads_dir(self) -> Path:
        return self.snapshots_dir / DOWNLOADS

    @cached_property
    def identities(self) -> list:
        """The age identities from --identity / DR_AGE_IDENTITY_FILE ([] when neither is given)."""
        path = self._flag("identity") or self.env.get(ENV_IDENTITY)
        if not path:
            return []
        from dr.core.age_keys import AgeKeyError, parse_identities

        p = Path(path)
        try:
            text = p.read_text()
        except FileNotFoundError:
            raise ConfigError(f"age identity file {p} does not exist", "check the path given to --identity / "
                              f"{ENV_IDENTITY}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read age identity file {p}: {exc}", "pass the file `age-keygen -o` wrote") from None
        try:
            return parse_identities(text, where=f"age identity file {p}")
        except AgeKeyError as exc:
            raise ConfigError(str(exc), "pass the file `age-keygen -o` wrote") from None

    @cached_property
    def recipients(self) -> list:
        """age recipients snapshots are encrypted to: DR_AGE_RECIPIENTS (comma-separated; empty means none), else
        the stack output snapshotAgeRecipients, else none."""
        from dr.core.age_keys import AgeKeyError, recipients, split_recipients

        raw = self.env.get(ENV_RECIPIENTS)
        where = ENV_RECIPIENTS
        if raw is not None:
            texts = split_recipients(raw)
        else:
            where = f"stack output {keys.SNAPSHOT_AGE_RECIPIENTS}"
            try:
                value = self.outputs.get(keys.SNAPSHOT_AGE_RECIPIENTS, [])
            except ConfigError:
                value = []
            texts = [str(v) for v in value] if isinstance(value, list) else split_recipients(str(value or ""))
        try:
            return recipients(texts, where=where)
        except AgeKeyError as exc:
            raise ConfigError(str(exc), f"fix {where}") from None

    # The three stores a command reaches, all through the store package's one factory (``open_store``).
    def local_store(self):
        from dr.adapters.store import open_store

        return open_store(self.snapshots_dir)

    def downloads_store(self):
        from dr.adapters.store import open_store

        return open_store(self.downloads_dir)

    def s3_store(self):
        from dr.adapters.store import S3Prefix, open_store

        return open_store(S3Prefix(self.bucket, self.prefix), self.s3_client())

    @cached_property
    def region(self) -> str | None:
        r = self.env.get("AWS_REGION") or self.env.get("AWS_DEFAULT_REGION")
        if r:
            return r
        try:
            return self.outputs.get(keys.AWS_REGION)
        except ConfigError:
            return None

    @cached_property
    def cluster(self) -> str:
        try:
            name = self.outputs.get(keys.CLUSTER_NAME)
        except ConfigError:
            name = None
        if name:
            return str(name)
        try:
            return self.talosconfig.context
        except ConfigError:
            return "unknown"

    def talosctl(self) -> Talosctl:
        cfg = self.talosconfig
        fingerprints = getattr(self.args, "cert_fingerprint", None) or ()
        return Talosctl(self.node, cfg.path, endpoint=self.endpoint, context=self._flag("talos_context"),
                        cert_fingerprints=fingerprints)

    def s3_client(self):
        from dr.adapters import s3

        return s3.make_client(self.region)


def find_project(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` that holds the Pulumi project file, or None."""
    for d in (start, *start.parents):
        if (d / PROJECT_FILE).is_file():
            return d
    return None


def find_talos_dir() -> Path:
    """``.talos`` next to the nearest Pulumi.yaml at or above the current folder (relative when that is the current
    folder, so messages read as before); a ConfigError in one line when there is none."""
    try:
        here = Path.cwd()
    except FileNotFoundError:
        raise ConfigError("the current folder no longer exists", f"cd to the repository root (where {PROJECT_FILE} "
                          f"is), or pass --talos-dir DIR / set {ENV_TALOS_DIR}") from None
    root = find_project(here)
    if root is None:
        # The checkout this code runs from (an editable install) is the likely one to cd to.
        checkout = find_project(PROJECT_DIR)
        where = f"`cd {checkout}`" if checkout else f"cd to the repository root (where {PROJECT_FILE} is)"
        raise ConfigError(f"no {DEFAULT_TALOS_DIR}/ here: {here} is not inside the talos-dr checkout (no "
                          f"{PROJECT_FILE} in it or any folder above)",
                          f"{where} and run it again, or pass --talos-dir DIR / set {ENV_TALOS_DIR}")
    return Path(DEFAULT_TALOS_DIR) if root == here else root / DEFAULT_TALOS_DIR


def normalise_prefix(p: str) -> str:
    """``snapshots`` and ``snapshots/`` name the same prefix; ``""`` and ``/`` the bucket's root."""
    p = p.strip().lstrip("/")
    return p if not p or p.endswith("/") else p + "/"
