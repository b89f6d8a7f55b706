"""Thin adapter over the talosctl binary: build the command, run it, parse and classify its output.

Flags and behaviours follow ../shared/reference/talos.md and siderolabs/talos at v1.13.9 (paths below). Only this
module knows talosctl's command line. The parsers are tested against upstream's own output formats
(tests/golden/talosctl/), not only against the sandbox.

Two addresses (the node on AWS): authenticated calls dial the endpoint (the Elastic IP) and name the node by its
private IP in the ``nodes`` metadata, because apid forwards a request for any address that is not on its own
interfaces (internal/app/apid/pkg/director/director.go) and the Elastic IP never is. Maintenance-mode calls
(``--insecure``) dial the ``--nodes`` address itself and ignore ``--endpoints``
(cmd/talosctl/pkg/talos/global/client.go, WithClientMaintenance): there the node is named by the address we can
reach, the endpoint.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from dr.core import spelling
from dr.core.errors import (
    ConfigError,
    DiskFull,
    DRError,
    NodeError,
    NodeUnreachable,
    RestoreConflict,
    TalosctlMissing,
    Timeout,
    TruncatedSnapshot,
)
from dr.core.ha_plan import Member

if TYPE_CHECKING:
    from dr.core.talos_credentials import TalosCredentials

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
_SERVICE_HEALTH = re.compile(r"^HEALTH\s+(\S+)", re.M)
# pkg/machinery/formatters/formatters.go RenderServicesInfo: "EVENTS\t[%s]: %s (%s ago)", newest first.
# A message may span lines (a multierror inside it); each event ends with its age.
_SERVICE_EVENT = re.compile(r"\[(\w+)\]: (.*?) \((\d[0-9hmsµun.]*) ago\)[ \t]*(?=\n|$)", re.S)
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|µs|us|ns|h|m|s)")
# An error the node behind apid returned (apid proxies every call that names a node and the client lists the
# nodes' errors: pkg/machinery/client/reply.go, hashicorp/go-multierror): "1 error occurred:\n\t* NODE: ERROR".
_NODE_ERROR = re.compile(r"\d+ errors? occurred:\s*\n\s*\* (\S+?): (.+)")
# An error from the node's own etcd client (127.0.0.1:2379): etcd is down on a node that answered us.
_ETCD_DOWN = re.compile(r"(127\.0\.0\.1|localhost|\[::1\]):2379|etcd client|etcd is not running", re.I)
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
    if not name or not isinstance(ctx, dict):
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


def talosconfig_credentials(cfg: Talosconfig) -> TalosCredentials:
    """The client credential of ``cfg``'s context (its base64 ``ca``, ``crt``, ``key``), for the Talos API client
    (``dr.adapters.talosapi``): the admin certificate talosctl would present. Re-reads the file
    ``load_talosconfig`` already checked (0600, the context exists)."""
    import json

    from dr.core.talos_credentials import TalosCredentials

    if not cfg.has_credentials:
        raise ConfigError(f"talosconfig {cfg.path} context {cfg.context!r} has no client certificate (ca, crt, key)",
                          "regenerate it with `pulumi up`")
    ctx = (yaml.safe_load(cfg.path.read_text()) or {})["contexts"][cfg.context]
    return TalosCredentials.from_json(json.dumps({k: ctx[k] for k in ("ca", "crt", "key")}),
                                      f"talosconfig {cfg.path} context {cfg.context!r}")


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


def go_duration_seconds(text: str) -> float | None:
    """Seconds in a Go ``time.Duration`` string (``42s``, ``1m30s``, ``2h0m5s``, ``350ms``); None if it is not one."""
    pos, total = 0, 0.0
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}
    for m in _GO_DURATION.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    return total if pos == len(text) and text else None


@dataclass(frozen=True)
class ServiceEvent:
    state: str
    message: str
    age: float | None  # seconds before the call


@dataclass(frozen=True)
class ServiceStatus:
    """``talosctl service NAME``: the state (system/events/events.go words: Initialized, Preparing, Waiting,
    Running, Stopping, Finished, Failed, Skipped, Starting), health, and the events newest first."""

    state: str
    health: str | None
    events: tuple[ServiceEvent, ...] = ()

    @property
    def since(self) -> float | None:
        """Seconds the service has been in its current state (the age of the newest event), when known."""
        return self.events[0].age if self.events else None

    @property
    def last_message(self) -> str:
        return self.events[0].message if self.events else ""


def parse_service(stdout: str) -> ServiceStatus | None:
    """Parse a single-service ``talosctl service`` answer; None when it has no STATE line."""
    m = _SERVICE_STATE.search(stdout)
    if not m:
        return None
    h = _SERVICE_HEALTH.search(stdout)
    block = re.search(r"^EVENTS[ \t]+(.*)", stdout, re.M | re.S)
    text = re.sub(r"\n[ \t]+", "\n", block.group(1)) if block else ""
    events = tuple(ServiceEvent(e.group(1), e.group(2), go_duration_seconds(e.group(3)))
                   for e in _SERVICE_EVENT.finditer(text))
    return ServiceStatus(m.group(1), h.group(1) if h else None, events)


def _last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "error" in ln.lower() or "rpc" in ln.lower():
            return ln
    return lines[-1] if lines else "no output"


def _cannot_run(cmd: Sequence[str]) -> TalosctlMissing:
    return TalosctlMissing(f"talosctl ({cmd[0]}) could not be run", "install talosctl and put it on PATH")


class Talosctl:
    """Runs talosctl against one node with one talosconfig: ``node`` is the address the node knows itself by (its
    private IP), ``endpoint`` the address we dial (its Elastic IP); they are the same from inside the VPC."""

    def __init__(self, node: str, talosconfig: Path | None, *, binary: str | None = None,
                 endpoint: str | None = None, context: str | None = None,
                 cert_fingerprints: Sequence[str] = ()):
        self.node = node
        self.endpoint = endpoint or node
        self.talosconfig = talosconfig
        self.context = context
        self.cert_fingerprints = tuple(cert_fingerprints)
        self._binary = binary

    @property
    def where(self) -> str:
        """How messages name the node: ``10.0.1.5 (via 203.0.113.10)``."""
        return self.node if self.endpoint == self.node else f"{self.node} (via {self.endpoint})"

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
            # WithClientMaintenance dials the --nodes addresses and ignores --endpoints: name what we can reach.
            cmd += ["--nodes", self.endpoint]
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
            raise _cannot_run(cmd) from None
        except subprocess.TimeoutExpired:
            raise Timeout(f"{what} on node {self.where}: talosctl did not finish within {timeout:.0f}s",
                          f"check the node is reachable on {self.endpoint}:50000, then retry") from None
        if check and proc.returncode != 0:
            raise self.classify(proc.stderr + "\n" + proc.stdout, what)
        return proc

    def classify(self, output: str, what: str) -> DRError:
        """One ``DRError`` for a failed talosctl call, from what it printed."""
        line = _last_error_line(output)
        low = output.lower()
        if "etcd data directory is not empty" in low:
            return RestoreConflict(f"{what} on node {self.node} refused: etcd data directory is not empty",
                                   "etcd was not wiped; reset the node with --system-labels-to-wipe=EPHEMERAL "
                                   f"(`{spelling.command('restore')}` does this) and retry")
        if "sha256 checksum not found" in low:
            return TruncatedSnapshot(f"{what} from node {self.node} was cut short: {line}",
                                     "the stream from the node ended early; retry, and check the node's health")
        if "no space left on device" in low:
            return DiskFull(f"{what} failed: no space left on device ({line})",
                            "free disk space where the file is written (or choose another --talos-dir) and retry")
        if "x509" in low or "certificate" in low or "tls:" in low:
            return NodeError(f"{what} on node {self.where} failed: TLS/certificate error: {line}",
                             "check the talosconfig belongs to this cluster (stack output talosconfig), or whether the "
                             "node is in maintenance mode")
        proxied = _NODE_ERROR.search(output)
        forwarded = (proxied and "Error while dialing" in proxied.group(2)) or (
            self.node != self.endpoint and re.search(rf"dial tcp {re.escape(self.node)}:\d+", output)
            and not re.search(rf"dial tcp {re.escape(self.endpoint)}:\d+", output))
        if forwarded:
            # apid on the endpoint answered, then could not dial the node named in `nodes`: it proxies every such
            # call to <node>:50000 (director.go, backend/apid.go), and a node cannot reach its own Elastic IP.
            return ConfigError(f"{what}: the node at {self.endpoint} answered, but could not reach node {self.node} "
                               f"({line})",
                               "pass the node's private IP as --node (stack output nodePrivateIp) and its Elastic IP "
                               "as --endpoint (nodePublicIp); a talosconfig made by `pulumi up` has both")
        if _ETCD_DOWN.search(output):  # only the node itself talks about its etcd client on :2379
            return NodeError(f"{what}: etcd on node {self.node} does not answer ({line})",
                             f"the node answers but its etcd is down: look at `talosctl -n {self.node} -e "
                             f"{self.endpoint} service etcd` and `logs etcd`; `{spelling.command('restore')}` can "
                             "restore it")
        if _UNREACHABLE.search(output):
            hint = "check the node is running, its address, and that the security group admits your IP"
            if self.node == self.endpoint:
                # A stream call forwarded to an unreachable `nodes` address fails the same way as a dead endpoint.
                hint += ("; from outside the VPC, --node must be the node's private IP (stack output nodePrivateIp) "
                         "and --endpoint its Elastic IP: apid forwards a call for any other address")
            return NodeUnreachable(f"{what}: node {self.where} does not answer on port 50000 ({line})", hint)
        return NodeError(f"{what} on node {self.where} failed: {line}", "see the message above; rerun with --debug")

    # --- operations -------------------------------------------------------------------------------------------

    def etcd_snapshot(self, path: Path, timeout: float = 3600, stall: float = 60.0) -> SnapshotInfo:
        """``talosctl etcd snapshot PATH`` (it writes ``PATH.part``, then renames). With etcd down on the node the
        stream sends nothing and never ends (the node's etcd client waits for etcd with no deadline:
        tests/golden/talosctl/etcd-snapshot-etcd-down.txt), so a stream that makes no progress for ``stall``
        seconds is stopped (SIGTERM, which talosctl handles) and reported as etcd not answering."""
        cmd = self.command(["etcd", "snapshot", str(path)])
        part = Path(str(path) + ".part")
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=os.environ.copy())
        except FileNotFoundError:
            raise _cannot_run(cmd) from None
        begin = last_change = time.monotonic()
        last_size = -1
        stalled = False
        try:
            while proc.poll() is None:
                time.sleep(0.2)
                now = time.monotonic()
                try:
                    size = part.stat().st_size
                except OSError:
                    size = -1
                if size != last_size:
                    last_size, last_change = size, now
                if now - last_change >= stall or now - begin >= timeout:
                    stalled = now - last_change >= stall
                    proc.terminate()
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                    break
            out, err = proc.communicate()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if stalled:
            raise NodeError(f"etcd snapshot from node {self.where}: no data for {stall:.0f}s, so it was stopped: "
                            "etcd on the node is not answering",
                            f"look at `talosctl -n {self.node} -e {self.endpoint} service etcd` and `logs etcd`; if "
                            f"etcd is down, `{spelling.command('restore')}` can restore it from a snapshot")
        if proc.returncode != 0 and time.monotonic() - begin >= timeout:
            raise Timeout(f"etcd snapshot on node {self.where}: talosctl did not finish within {timeout:.0f}s",
                          f"check the node is reachable on {self.endpoint}:50000, then retry")
        if proc.returncode != 0:
            raise self.classify(err + "\n" + out, "etcd snapshot")
        return parse_snapshot_info(out + err)

    def stage(self, *, insecure: bool = False) -> str:
        """The node's machine stage (``running``, ``maintenance``, ``rebooting`` ...)."""
        args = ["get", "machinestatus", "-o", "jsonpath={.spec.stage}"]
        if insecure:
            args.append("--insecure")
        proc = self.run(args, what="get machinestatus", insecure=insecure, timeout=30)
        return proc.stdout.strip()

    def service(self, service: str = "etcd") -> ServiceStatus:
        """``talosctl service NAME``: state, health and events (authenticated; a maintenance node runs none)."""
        proc = self.run(["service", service], what=f"service {service}", timeout=30)
        status = parse_service(proc.stdout)
        if status is None:
            raise NodeError(f"service {service} on node {self.where}: no STATE in talosctl's answer",
                            "check the talosctl version matches the cluster (stack output talosVersion)")
        return status

    def reset(self, labels: Sequence[str], timeout: float = 600) -> None:
        if not labels:
            # talos.md: a reset with no labels may wipe the whole disk of a cloud VM and leave it unbootable.
            raise ValueError("refusing a reset without --system-labels-to-wipe")
        args = ["reset", "--graceful=false", "--reboot"] + [f"--system-labels-to-wipe={label}" for label in labels]
        args += ["--wait=false"]
        self.run(args, what="reset", timeout=timeout)

    def apply_config_insecure(self, file: Path, timeout: float = 120) -> None:
        """Maintenance mode: the node's certificate is self-signed, so this channel is encrypted but not
        authenticated unless the node's certificate fingerprint (shown on its console) is pinned."""
        args = ["apply-config", "--insecure", "--file", str(file)]
        args += [f"--cert-fingerprint={fp}" for fp in self.cert_fingerprints]
        self.run(args, what="apply-config --insecure", insecure=True, timeout=timeout)

    # Set by a restore from a raw member/snap/db (dr.restore --from-data-dir-copy): the file has no hash, and etcdutl
    # refuses it unless told to skip the check ("snapshot missing hash but --skip-hash-check=false", etcd v3.6.12
    # etcdutl/snapshot/v3_snapshot.go copyAndVerifyDB); talosctl's flag for it is --recover-skip-hash-check.
    recover_skip_hash_check = False

    def bootstrap_recover(self, snapshot: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """One attempt; the caller retries the NOT_READY errors."""
        args = ["bootstrap", f"--recover-from={snapshot}"]
        if self.recover_skip_hash_check:
            args.append("--recover-skip-hash-check")
        return self.run(args, what="bootstrap --recover-from", timeout=timeout, check=False)

    def health(self, wait_timeout: str = "10m", timeout: float = 900,
               control_plane_nodes: Sequence[str] = ()) -> None:
        # The private IP: etcd advertises routed addresses only (controllers/etcd/spec.go), and the check wants
        # the etcd members to be among the control-plane nodes given (pkg/cluster/check/etcd.go). Three nodes: all
        # of them (the private IPs), comma-separated as talosctl's string-slice flag takes them.
        nodes = ",".join(control_plane_nodes) if control_plane_nodes else self.node
        self.run(["health", "--wait-timeout", wait_timeout, "--control-plane-nodes", nodes],
                 what="health", timeout=timeout)

    def bootstrap_ready(self) -> str | None:
        """None when Bootstrap would get past its not-ready checks, else what it waits for. Bootstrap wants the CRI
        service up (``IsBootstrapAllowed``: v1alpha1_runtime.go:248-258) and time in sync (the TimeStatus resource's
        ``synced``, v1alpha1_server.go:450-455): two cheap reads, where `bootstrap --recover-from` uploads the whole
        snapshot before Bootstrap answers (cmd/talosctl/cmd/talos/bootstrap.go:45-74)."""
        cri = self.service("cri")
        if cri.state != "Running":
            return f"service cri is {cri.state}"
        synced = self.run(["get", "timestatus", "-o", "jsonpath={.spec.synced}"], what="get timestatus", timeout=30)
        if synced.stdout.strip().lower() != "true":
            return "time is not in sync yet"
        return None

    def etcd_alarms(self) -> list[tuple[str, str]]:
        """``talosctl etcd alarm list``: (member id, alarm) pairs; empty when etcd has none. The table is
        ``MEMBER  ALARM`` (``NODE`` first when the answer came through apid with a hostname): cmd/talosctl/cmd/talos/
        etcd.go:50-84."""
        proc = self.run(["etcd", "alarm", "list"], what="etcd alarm list", timeout=30)
        alarms = []
        for line in proc.stdout.splitlines()[1:]:
            cells = line.split()
            if len(cells) >= 2:
                alarms.append((cells[-2], cells[-1]))
        return alarms

    def kubeconfig(self, path: Path, timeout: float = 60) -> None:
        self.run(["kubeconfig", str(path), "--force", "--merge=false"], what="kubeconfig", timeout=timeout)

    def machine_type(self) -> str:
        """``talosctl get machinetype``: ``controlplane``, ``init`` or ``worker``. The resource's spec marshals to the
        bare type name (pkg/machinery/resources/config/machine_type.go at v1.13.9, machineTypeSpec.MarshalYAML), so
        the jsonpath ``{.spec}`` is that word."""
        proc = self.run(["get", "machinetype", "-o", "jsonpath={.spec}"], what="get machinetype", timeout=30)
        return proc.stdout.strip()

    def etcd_members(self) -> list[Member]:
        """``talosctl etcd members``: this node's etcd member list (the request asks the local member:
        ``QueryLocal``), parsed from the table of cmd/talosctl/cmd/talos/etcd.go at v1.13.9 (etcdMemberListCmd)."""
        proc = self.run(["etcd", "members"], what="etcd members", timeout=30)
        return parse_members(proc.stdout)


def parse_members(stdout: str) -> list[Member]:
    """The table ``[NODE] ID HOSTNAME PEER URLS CLIENT URLS LEARNER`` (tabwriter, 3 spaces of padding; URLs joined
    with commas, so no cell holds a space; NODE only when the answer came through apid with a hostname)."""
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    if not lines or lines[0].split()[:1] not in (["ID"], ["NODE"]):
        return []
    skip = 1 if lines[0].split()[0] == "NODE" else 0
    out = []
    for line in lines[1:]:
        cells = line.split()[skip:]
        if len(cells) < 3:
            continue
        # A learner that has not started yet has no name and no client URLs: those cells are empty.
        middle = cells[1:-1]
        names = [c for c in middle if "://" not in c]
        urls = [c.split(",") for c in middle if "://" in c] + [[], []]
        out.append(Member(id=cells[0], hostname=names[0] if names else "", peer_urls=tuple(u for u in urls[0] if u),
                          client_urls=tuple(u for u in urls[1] if u), is_learner=cells[-1] == "true"))
    return out
