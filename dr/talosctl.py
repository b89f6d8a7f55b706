"""Thin adapter over the talosctl binary: build the command, run it, classify its failure.

Flags and behaviours follow ../shared/reference/talos.md. Only this module knows talosctl's command line.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from dr.errors import (
    ConfigError,
    DiskFull,
    NodeError,
    NodeUnreachable,
    RestoreConflict,
    TalosctlMissing,
    Timeout,
    TruncatedSnapshot,
)

# Errors a node returns while it is still coming up: retry, do not fail (talos.md).
NOT_READY = (
    "bootstrap is not available yet",
    "time is not in sync yet",
    "etcd service is not ready for recovery yet",
)
_UNREACHABLE = re.compile(
    r"connection refused|code = Unavailable|no route to host|i/o timeout|network is unreachable|"
    r"context deadline exceeded|connection reset|no such host|EOF$",
    re.I,
)
_SERVICE_STATE = re.compile(r"^STATE\s+(\S+)", re.M)
_SNAP_INFO = re.compile(r"hash ([0-9a-f]+), revision (\d+), total keys (\d+), total size (\d+)")


@dataclass(frozen=True)
class Talosconfig:
    path: Path
    context: str
    endpoints: tuple[str, ...]
    nodes: tuple[str, ...]
    has_credentials: bool


def load_talosconfig(path: Path, *, context: str | None = None) -> Talosconfig:
    """Read and sanity-check a talosconfig: private permissions, the context exists, it carries a client certificate."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"talosconfig {path} does not exist",
                          "run `pulumi up` to rewrite .talos/, or pass --talosconfig PATH") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"talosconfig {path} is not a regular file", "pass the path of the talosconfig file")
    if st.st_mode & 0o077:
        raise ConfigError(f"talosconfig {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
                          "it holds an admin key", f"run `chmod 600 {path}`")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"talosconfig {path} is not valid YAML", "regenerate it with `pulumi up`") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("contexts"), dict):
        raise ConfigError(f"talosconfig {path} has no contexts", "regenerate it with `pulumi up`")
    name = context or doc.get("context")
    ctx = doc["contexts"].get(name) if name else None
    if not isinstance(ctx, dict):
        known = ", ".join(sorted(doc["contexts"])) or "none"
        raise ConfigError(f"talosconfig {path} has no context {name!r} (contexts: {known})",
                          "pass --talos-context NAME or fix `context:` in the file")
    creds = all(ctx.get(k) for k in ("ca", "crt", "key"))
    if creds:
        try:
            for k in ("ca", "crt", "key"):
                base64.b64decode(ctx[k], validate=True)
        except (ValueError, TypeError):
            creds = False
    return Talosconfig(path, name, tuple(ctx.get("endpoints") or ()), tuple(ctx.get("nodes") or ()), creds)


@dataclass(frozen=True)
class SnapshotInfo:
    hash: str | None
    revision: int | None
    total_keys: int | None
    total_size: int | None


def parse_snapshot_info(stdout: str) -> SnapshotInfo:
    m = _SNAP_INFO.search(stdout)
    if not m:
        return SnapshotInfo(None, None, None, None)
    return SnapshotInfo(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)))


def _last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "error" in ln.lower() or "rpc" in ln.lower():
            return ln
    return lines[-1] if lines else "no output"


class Talosctl:
    """Runs talosctl against one node with one talosconfig."""

    def __init__(self, node: str, talosconfig: Path | None, *, binary: str | None = None,
                 endpoint: str | None = None, context: str | None = None):
        self.node = node
        self.endpoint = endpoint or node
        self.talosconfig = talosconfig
        self.context = context
        self._binary = binary

    @property
    def binary(self) -> str:
        b = self._binary or shutil.which("talosctl")
        if not b:
            raise TalosctlMissing("talosctl was not found on PATH",
                                  "install it (https://www.talos.dev/latest/talos-guides/install/talosctl/) "
                                  "at the version of your cluster (stack output talosVersion)")
        return b

    def command(self, args: Sequence[str], *, insecure: bool = False) -> list[str]:
        cmd = [self.binary]
        if insecure:
            cmd += ["--nodes", self.node, "--endpoints", self.endpoint]
        else:
            if self.talosconfig is not None:
                cmd += ["--talosconfig", str(self.talosconfig)]
            if self.context:
                cmd += ["--context", self.context]
            cmd += ["--nodes", self.node, "--endpoints", self.endpoint]
        return cmd + list(args)

    def run(self, args: Sequence[str], *, what: str, insecure: bool = False, timeout: float | None = 120,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = self.command(args, insecure=insecure)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
        except FileNotFoundError:
            raise TalosctlMissing(f"talosctl ({cmd[0]}) could not be run", "install talosctl and put it on PATH") from None
        except subprocess.TimeoutExpired:
            raise Timeout(f"{what} on node {self.node}: talosctl did not finish within {timeout:.0f}s",
                          "check the node is reachable on port 50000, then retry") from None
        if check and proc.returncode != 0:
            raise self.classify(proc.stderr + "\n" + proc.stdout, what)
        return proc

    def classify(self, output: str, what: str) -> Exception:
        line = _last_error_line(output)
        low = output.lower()
        if "etcd data directory is not empty" in low:
            return RestoreConflict(f"{what} on node {self.node} refused: etcd data directory is not empty",
                                   "etcd was not wiped; reset the node with --system-labels-to-wipe=EPHEMERAL "
                                   "(`python -m dr.restore` does this) and retry")
        if "sha256 checksum not found" in low:
            return TruncatedSnapshot(f"{what} from node {self.node} was cut short: {line}",
                                     "the stream from the node ended early; retry, and check the node's health")
        if "no space left on device" in low:
            return DiskFull(f"{what} failed: no space left on device ({line})",
                            "free disk space where the file is written (or choose another --talos-dir) and retry")
        if "x509" in low or "certificate" in low or "tls:" in low:
            return NodeError(f"{what} on node {self.node} failed: TLS/certificate error: {line}",
                             "check the talosconfig belongs to this cluster (stack output talosconfig), or whether the "
                             "node is in maintenance mode")
        if _UNREACHABLE.search(output):
            return NodeUnreachable(f"{what}: node {self.node} does not answer on port 50000 ({line})",
                                   "check the node is running, its address, and that the security group admits your IP")
        return NodeError(f"{what} on node {self.node} failed: {line}", "see the message above; rerun with --debug")

    # --- operations -------------------------------------------------------------------------------------------

    def etcd_snapshot(self, path: Path, timeout: float | None = 3600) -> SnapshotInfo:
        proc = self.run(["etcd", "snapshot", str(path)], what="etcd snapshot", timeout=timeout)
        return parse_snapshot_info(proc.stdout + proc.stderr)

    def version_insecure(self) -> bool:
        """True when the node answers without credentials, i.e. it is in maintenance mode."""
        proc = self.run(["version", "--insecure"], what="version --insecure", check=False, timeout=30)
        return proc.returncode == 0

    def stage(self, *, insecure: bool = False) -> str:
        """The node's machine stage (``running``, ``maintenance``, ``rebooting`` ...)."""
        args = ["get", "machinestatus", "-o", "jsonpath={.spec.stage}"]
        if insecure:
            args.append("--insecure")
        proc = self.run(args, what="get machinestatus", timeout=30)
        return proc.stdout.strip()

    def service_state(self, service: str = "etcd") -> str:
        """A service's state as `talosctl service NAME` prints it: ``Running``, ``Preparing`` (etcd waiting for a
        bootstrap), ``Finished`` ... Authenticated (a maintenance node has no services to show)."""
        proc = self.run(["service", service], what=f"service {service}", timeout=30)
        m = _SERVICE_STATE.search(proc.stdout)
        if not m:
            raise NodeError(f"service {service} on node {self.node}: no STATE in talosctl's answer",
                            "check the talosctl version matches the cluster (stack output talosVersion)")
        return m.group(1)

    def reset(self, labels: Sequence[str], timeout: float = 600) -> None:
        if not labels:
            # talos.md: a reset with no labels may wipe the whole disk of a cloud VM and leave it unbootable.
            raise ValueError("refusing a reset without --system-labels-to-wipe")
        args = ["reset", "--graceful=false", "--reboot"] + [f"--system-labels-to-wipe={label}" for label in labels]
        args += ["--wait=false"]
        self.run(args, what="reset", timeout=timeout)

    def apply_config_insecure(self, file: Path, timeout: float = 120) -> None:
        self.run(["apply-config", "--insecure", "--file", str(file)], what="apply-config --insecure",
                 insecure=True, timeout=timeout)

    def bootstrap_recover(self, snapshot: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """One attempt; the caller retries the NOT_READY errors."""
        return self.run(["bootstrap", f"--recover-from={snapshot}"], what="bootstrap --recover-from",
                        timeout=timeout, check=False)

    def health(self, wait_timeout: str = "10m", timeout: float = 900) -> None:
        self.run(["health", "--wait-timeout", wait_timeout, "--control-plane-nodes", self.node],
                 what="health", timeout=timeout)

    def kubeconfig(self, path: Path, timeout: float = 60) -> None:
        self.run(["kubeconfig", str(path), "--force", "--merge=false"], what="kubeconfig", timeout=timeout)
