"""``Sandbox``: start, inspect, drive and stop one sandbox from Python (tests, the demo).

    with Sandbox.up(tmp_path / "sb", reboot_seconds=0.3) as sb:
        subprocess.run(["talosctl", "etcd", "snapshot", "x.db"], env=sb.env, check=True)

``up`` leaves detached processes running (a real etcd, moto's S3 server); ``down`` stops them by the pids recorded
in the directory. The simulated node has no process: ``<dir>/bin/talosctl`` reads and advances its state.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dr.core import outputs as out
from dr.core.cluster_nodes import ALLOWED_COUNTS, ClusterNode
from sandbox import etcd, faults, kube, kube_apiserver, node_apid, procs, s3
from sandbox.layout import (
    APID_PORT,
    KUBE_PORT,
    KUBERNETES_VERSION,
    NODE_PRIVATE_IP,
    NODE_PUBLIC_IP,
    TALOS_VERSION,
    ZONES,
    Info,
    Paths,
    node_addresses,
    node_hostname,
    write_private,
)
from sandbox.node import CREATING, HEALTHY, Node, State, boot_events, started
from sandbox.pki import ClusterSecrets
from sandbox.seed import seed_data

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CLUSTER = "talos-sandbox"
DEFAULT_BUCKET = "talos-sandbox-etcd-backups"
CLUSTER_ENDPOINT = f"https://{NODE_PUBLIC_IP}:6443"

# What `up` writes at the top of the directory (a fresh `up` replaces exactly these).
_OWNED = ("sandbox.json", "node", "pki", "bin", "logs", "talosconfig", "kubeconfig", "outputs.json", "env",
          "controlplane.yaml", "secrets.json", "talos")


def with_addresses(talosconfig: str, endpoint: str | list[str], node: str | list[str]) -> str:
    """A talosconfig whose every context dials ``endpoint`` and names ``node`` (or every one of a list)."""
    import yaml

    doc = yaml.safe_load(talosconfig)
    for ctx in (doc.get("contexts") or {}).values():
        ctx["endpoints"] = list(endpoint) if isinstance(endpoint, list) else [endpoint]
        ctx["nodes"] = list(node) if isinstance(node, list) else [node]
    return yaml.safe_dump(doc, sort_keys=False)


@dataclass(frozen=True)
class Member:
    """One control-plane node of the sandbox, as the stack names it (``sb.members``)."""

    index: int
    hostname: str
    private_ip: str
    public_ip: str
    apid_endpoint: str  # what a talosconfig's endpoints name: the Elastic IP (":port" when not 50000)
    instance_id: str = ""
    availability_zone: str = ""


def venv_bin() -> Path | None:
    """The bin folder of the virtualenv running this (where `make venv` put `talos-dr`), if there is one."""
    here = Path(sys.executable).parent
    return here if (here / "talos-dr").exists() else None


def _answers(client_urls: list[str]) -> bool:
    """A member's etcd answers on its first client URL (``http://host:port``)."""
    if not client_urls:
        return False
    host, _, port = client_urls[0].removeprefix("http://").rpartition(":")
    return etcd.serving(int(port), host)


class SandboxError(RuntimeError):
    """The sandbox cannot start or is not there."""


class AlreadyRunning(SandboxError):
    pass


class EtcdNotInstalled(SandboxError):
    pass


class Sandbox:
    """One sandbox directory. Get one from ``Sandbox.up`` or ``Sandbox.load``."""

    def __init__(self, root: str | os.PathLike[str]):
        self.paths = Paths(root)
        if not self.paths.info.exists():
            raise SandboxError(f"no sandbox in {self.paths.root} (run `python -m sandbox up --dir {root}`)")
        self.info = Info.load(self.paths)

    # --- lifecycle -----------------------------------------------------------------------------------------

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> Sandbox:
        return cls(root)

    @staticmethod
    def _await_s3(paths: Paths, info: Info) -> int:
        """The answering moto server's pid (started again on another port if its port was taken: s3.ready_or_respawn);
        the info on disk always names the last one started, so `down` stops it."""
        assert info.s3_pid is not None and info.s3_port is not None
        pid, info.s3_port, answers = s3.ready_or_respawn(info.s3_pid, info.s3_port, paths.logs / "s3.log")
        if pid != info.s3_pid:
            info.s3_pid = pid
            info.save(paths)
        if not answers:
            raise SandboxError(f"the S3 server did not start (log: {paths.logs / 's3.log'})")
        return pid

    @classmethod
    def up(
        cls,
        root: str | os.PathLike[str],
        *,
        reboot_seconds: float = 0.5,
        bootstrap_not_ready_seconds: float = 0.3,
        cluster_name: str = DEFAULT_CLUSTER,
        bucket: str = DEFAULT_BUCKET,
        with_s3: bool = True,
        seed: bool = True,
        etcd_quota_bytes: int = 0,
        apid: str | None = None,
        nodes: int = 1,
    ) -> Sandbox:
        """Start a sandbox in ``root``: etcd (seeded), the S3 server (unless ``with_s3=False``), the node files.
        ``apid``: "python" (sandbox/node_apid.py, the default) or "go" (the grpc-go stand-in, sandbox/goapid/);
        default from ``$DR_SANDBOX_APID``. ``nodes``: 1 (the default) or 3 control-plane nodes, each with its own
        addresses, apid and real etcd member of one cluster: node 1 bootstraps, the others join through Talos's
        join loop (sandbox/membership.py)."""
        apid = apid or os.environ.get("DR_SANDBOX_APID") or "python"
        if apid not in ("python", "go"):
            raise SandboxError(f"apid must be python or go, not {apid!r}")
        if nodes not in ALLOWED_COUNTS:
            raise SandboxError(f"nodes must be one of {', '.join(map(str, ALLOWED_COUNTS))} (etcd needs a majority: "
                               f"two nodes tolerate no loss), not {nodes}")
        if nodes > 1 and apid == "go":
            raise SandboxError("the grpc-go apid stand-in serves one node only; use apid='python' with nodes > 1")
        paths = Paths(root)
        cls._refuse_running(paths, root)
        etcd_bin, etcdctl_bin = etcd.binaries()
        if not etcd_bin or not etcdctl_bin:
            raise EtcdNotInstalled(
                "etcd and etcdctl are needed (Debian: apt-get install etcd-server etcd-client; or `make etcd`)"
            )
        cls._clear(paths)
        info = Info(
            dir=str(paths.root),
            cluster_name=cluster_name,
            etcd_client_port=procs.free_port(),
            etcd_peer_port=procs.free_port(),
            reboot_seconds=reboot_seconds,
            bootstrap_not_ready_seconds=bootstrap_not_ready_seconds,
            python=sys.executable,
            created_at=time.time(),
            etcd_quota_bytes=etcd_quota_bytes,
        )
        if nodes > 1:
            info.etcd_host = NODE_PRIVATE_IP
            info.etcd_client_port = procs.free_port_on(NODE_PRIVATE_IP)
            info.etcd_peer_port = procs.free_port_on(NODE_PRIVATE_IP)
            info.more_nodes = [cls._new_node(i) for i in range(2, nodes + 1)]
        try:
            if with_s3:
                info.s3_port = procs.free_port()
                info.bucket = bucket
                info.s3_pid = s3.spawn(info.s3_port, paths.logs / "s3.log", sys.executable)
            info.save(paths)  # pids on disk before anything can fail, so `down` can clean up
            secrets = ClusterSecrets.generate(cluster_name)
            write_private(paths.secrets, secrets.to_json())
            controlplane = cls._start_servers(paths, info, secrets, apid)
            booted = time.time() - 3600
            cls._start_first_etcd(paths, info, booted)
            if seed:
                key = secrets.bundle["secrets"]["secretboxencryptionsecret"].encode()
                for k, v in seed_data(key).items():
                    etcd.put(info.etcd_endpoint, k, v)
            faults.save(paths.faults, {})
            Node(paths.root).register_kubelet()  # the kubelet's Node for this machine (sandbox/kube.py)
            if nodes > 1:
                cls._join_others(paths, info)
            if with_s3:
                cls._await_s3(paths, info)
                assert info.s3_endpoint is not None
                s3.create_bucket(info.s3_endpoint, bucket, info.region)

            sb = cls(root)
            sb._write_wrapper()
            sb._write_outputs(secrets, controlplane)
            sb._write_env()
            return sb
        except BaseException:
            cls._stop_all(paths, info)
            raise

    @classmethod
    def _refuse_running(cls, paths: Paths, root: str | os.PathLike[str]) -> None:
        if paths.info.exists():
            try:
                existing = cls(root)
            except (SandboxError, ValueError, TypeError, json.JSONDecodeError):
                existing = None
            if existing is not None and existing.running():
                raise AlreadyRunning(
                    f"a sandbox is already running in {paths.root} ({existing._pids_text()}); "
                    f"use it, or stop it first: python -m sandbox down --dir {root}"
                )

    @staticmethod
    def _clear(paths: Paths) -> None:
        """Remove what an earlier `up` wrote (exactly the names it owns), make the folders."""
        paths.root.mkdir(parents=True, exist_ok=True)
        owned = [*_OWNED, *(p.name for p in paths.root.glob("node-[0-9]*") if p.is_dir())]
        for name in owned:
            p = paths.root / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        for d in (paths.node, paths.pki, paths.bin, paths.logs):
            d.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _new_node(index: int) -> dict:
        """Node ``index``'s own settings (Info.more_nodes): addresses, hostname (= etcd member name), free ports."""
        private, public = node_addresses(index)
        return {"private_ip": private, "public_ip": public, "hostname": node_hostname(index),
                "etcd_name": node_hostname(index), "etcd_host": private,
                "etcd_client_port": procs.free_port_on(private), "etcd_peer_port": procs.free_port_on(private),
                "apid_pid": None, "apid_port": APID_PORT}

    @classmethod
    def _start_servers(cls, paths: Paths, info: Info, secrets: ClusterSecrets, apid: str) -> str:
        """Every node's state (running, configured, etcd not started), its apid, the talosconfig, the
        kube-apiserver stand-in, the kubeconfig and machine configs; returns the control-plane machine config."""
        # certSANs name the Elastic IP, as infra/talos.py's base patch does.
        controlplane = secrets.controlplane_config(CLUSTER_ENDPOINT, NODE_PUBLIC_IP, TALOS_VERSION, KUBERNETES_VERSION)
        write_private(paths.controlplane, controlplane)
        booted = time.time() - 3600
        for i in range(1, info.node_count + 1):
            npaths = paths.for_node(i)
            npaths.node.mkdir(parents=True, exist_ok=True)
            write_private(npaths.machine_config, controlplane)
            if i > 1:
                faults.save(npaths.faults, {})
            # The node's state before its apid, which reads it at every connection. Nodes 2..N boot with an empty
            # etcd: their join loop waits until node 1's etcd (started next) answers.
            State(stage="running", configured=True, etcd_pid=None, up_since=booted,
                  boot_done=i == 1, etcd_events=boot_events(booted) if i > 1 else []).save(npaths.state)
            pid, port = cls._start_apid(npaths, info if apid == "go" else None)
            info.update_node(i, apid_pid=pid, apid_port=port)
            info.save(paths)
        # As the stack writes it: endpoints = the Elastic IPs, nodes = the private IPs (infra/talos.py).
        views = [info.for_node(i) for i in range(1, info.node_count + 1)]
        write_private(paths.talosconfig, with_addresses(secrets.talosconfig(NODE_PRIVATE_IP),
                                                        [v.apid_endpoint for v in views],
                                                        [v.private_ip for v in views]))
        kube_pid, info.kube_port = cls._start_kube_apiserver(paths)
        info.kube_pid = kube_pid
        info.save(paths)
        # The kubeconfig names the stand-in's port: 6443 unless another sandbox holds it (sandbox-only).
        server = CLUSTER_ENDPOINT if info.kube_port == KUBE_PORT else f"https://{NODE_PUBLIC_IP}:{info.kube_port}"
        write_private(paths.kubeconfig, secrets.kubeconfig(server))
        return controlplane

    @staticmethod
    def _start_first_etcd(paths: Paths, info: Info, booted: float) -> None:
        """Node 1's etcd, bootstrapped an hour ago: a new cluster of one member (the others join it). Started under
        the node's lock, unsettled: its apid must not see data without a pid and start a second etcd."""
        with Node(paths.root).locked(settle=False) as st:
            etcd_pid = etcd.start(
                paths.etcd_data, info.etcd_name, info.etcd_client_port, info.etcd_peer_port, paths.logs / "etcd.log",
                quota_bytes=info.etcd_quota_bytes, host=info.etcd_host,
            )
            fresh = State(stage="running", configured=True, etcd_pid=etcd_pid, up_since=booted,
                          etcd_events=[*boot_events(booted), [booted + 1, "Preparing", CREATING],
                                       [booted + 1, "Running", started(etcd_pid)], [booted + 6, "Running", HEALTHY]])
            st.__dict__.update(fresh.__dict__)

    @staticmethod
    def _join_others(paths: Paths, info: Info, timeout: float = 30) -> None:
        """Nodes 2..N join node 1's cluster through the join loop (learner, then promoted), one after the other as
        etcd allows one learner at a time; returns once every one is a voting member."""
        deadline = time.monotonic() + timeout
        for i in range(2, info.node_count + 1):
            node = Node(paths.root, i)
            while True:
                with node.locked() as st:
                    done = st.etcd_pid is not None and st.learner_id is None and node._etcd_alive(st)
                    why = st.join_waiting
                if done:
                    break
                if time.monotonic() >= deadline:
                    raise SandboxError(f"node {i} did not join the etcd cluster within {timeout:.0f}s ({why}; log: "
                                       f"{paths.for_node(i).log('etcd')})")
                time.sleep(0.05)

    @staticmethod
    def _stop_all(paths: Paths, info: Info) -> None:
        """Stop every process `up` may have started (by recorded pid)."""
        for i in range(1, info.node_count + 1):
            npaths, view = paths.for_node(i), info.for_node(i)
            procs.stop(view.apid_pid, node_apid.MARKER)
            try:
                pid = State.load(npaths.state).etcd_pid
            except (OSError, ValueError):
                pid = None
            procs.stop(pid, str(npaths.etcd_data))
        procs.stop(info.s3_pid, s3.MARKER)  # the last one started, also when _await_s3 started another
        procs.stop(info.kube_pid, kube_apiserver.MARKER)

    @staticmethod
    def _start_kube_apiserver(paths: Paths) -> tuple[int, int]:
        """Start the kube-apiserver stand-in (sandbox/kube_apiserver.py); returns (pid, port)."""
        ready = paths.node / "kube-apiserver.json"
        ready.unlink(missing_ok=True)
        pid = Sandbox._spawn_module(kube_apiserver.MARKER, paths, "kube-apiserver.log")
        return pid, Sandbox._bound_port(pid, ready, kube_apiserver.MARKER, "the kube-apiserver stand-in",
                                        paths.logs / "kube-apiserver.log")

    @staticmethod
    def _start_apid(paths: Paths, go_info: Info | None = None) -> tuple[int, int]:
        """Start the node's apid (sandbox/node_apid.py; with ``go_info``, the grpc-go stand-in) and wait for the port
        it bound; returns (pid, port)."""
        ready = paths.node / "apid.json"
        ready.unlink(missing_ok=True)
        if go_info is not None:
            from sandbox import goapid

            try:  # its command line carries node_apid.MARKER too, so `down` stops it the same way
                pid = goapid.spawn_for_sandbox(paths, go_info, f"{node_apid.MARKER}.go")
            except goapid.GoApidMissing as exc:
                raise SandboxError(str(exc)) from exc
        else:
            pid = Sandbox._spawn_module(node_apid.MARKER, paths, paths.log("apid").name,
                                        *([str(paths.index)] if paths.index > 1 else []))
        return pid, Sandbox._bound_port(pid, ready, node_apid.MARKER, "the node's apid", paths.log("apid"))

    @staticmethod
    def _spawn_module(marker: str, paths: Paths, log: str, *args: str) -> int:
        """``python -m <marker> <sandbox dir> [args]`` from the repository, its output in ``logs/<log>``; returns its
        pid."""
        env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        return procs.spawn([sys.executable, "-m", marker, str(paths.root), *args], paths.logs / log, env=env,
                           cwd=str(REPO_ROOT))

    @staticmethod
    def _bound_port(pid: int, ready: Path, marker: str, what: str, log: Path) -> int:
        """The port a server process wrote to ``ready`` once it listens; it is stopped when it never does."""
        procs.wait_for(lambda: ready.exists() or not procs.alive(pid), 30)
        try:
            return int(json.loads(ready.read_text())["port"])
        except (OSError, ValueError, KeyError) as exc:
            procs.stop(pid, marker)
            raise SandboxError(f"{what} did not start (log: {log})") from exc

    def down(self) -> list[str]:
        """Stop every process this sandbox started (by recorded pid): every node's apid and etcd, the
        kube-apiserver stand-in, the S3 server. Idempotent. Returns what was stopped."""
        from concurrent.futures import ThreadPoolExecutor

        stopped = []
        nodes = range(1, self.info.node_count + 1)
        # The apids first: on a multi-node sandbox each one settles its node on a tick and could start etcd again.
        # Every node at once (each stop waits for its process to exit).
        with ThreadPoolExecutor(max_workers=4) as pool:
            views = [self.info.for_node(i) for i in nodes]
            done = list(pool.map(lambda v: procs.stop(v.apid_pid, node_apid.MARKER), views))
            stopped += [f"apid{'' if v.index == 1 else f' of node {v.index}'} (pid {v.apid_pid})"
                        for v, ok in zip(views, done, strict=True) if ok]
            if procs.stop(self.info.kube_pid, kube_apiserver.MARKER):
                stopped.append(f"kube-apiserver (pid {self.info.kube_pid})")
        for i in nodes:  # one at a time: an etcd stopped while its peers stop too waits for them (slower)
            stopped += self._stop_node(i)
        if procs.stop(self.info.s3_pid, s3.MARKER):
            stopped.append(f"s3 (pid {self.info.s3_pid})")
        return stopped

    def _stop_node(self, i: int) -> list[str]:
        """Stop node ``i``'s etcd and leave the node off (talosctl gets "connection refused"; nothing restarts etcd
        lazily). Also an etcd the state no longer names but that runs on the node's data directory (a start that
        raced a crash) is stopped."""
        npaths = self.paths.for_node(i)
        if not npaths.state.exists():  # up failed before the node existed
            return []
        stopped = []
        node = Node(self.paths.root, i)
        with node.locked(settle=False) as st:
            pid = st.etcd_pid
            if procs.stop(pid, str(npaths.etcd_data)):
                stopped.append(f"etcd{'' if i == 1 else f' of node {i}'} (pid {pid})")
            for stray in procs.find(str(npaths.etcd_data), exe=etcd.ETCD):
                if procs.stop(stray, str(npaths.etcd_data)):
                    stopped.append(f"etcd{'' if i == 1 else f' of node {i}'} (pid {stray}, not recorded)")
            st.etcd_pid = None
            st.stage, st.timeline, st.target = "halted", [], None
        return stopped

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    # --- files written by up -------------------------------------------------------------------------------

    def _write_wrapper(self) -> None:
        script = (
            "#!/bin/sh\n"
            f"# talosctl for the simulated Talos node of the sandbox in {self.paths.root}\n"
            f"TALOS_SANDBOX_DIR='{self.paths.root}'\n"
            "export TALOS_SANDBOX_DIR\n"
            f"PYTHONPATH='{REPO_ROOT}'${{PYTHONPATH:+:$PYTHONPATH}}\n"
            "export PYTHONPATH\n"
            # Every call is a new interpreter: let it cache bytecode (in __pycache__, git-ignored) even where the
            # caller disabled that, or each call recompiles the sandbox modules.
            "unset PYTHONDONTWRITEBYTECODE\n"
            # Imported, not run with -m, so its bytecode is cached between calls.
            f"exec '{self.info.python}' -c 'import sys; from sandbox.talosctl import main; sys.exit(main())' \"$@\"\n"
        )
        p = self.paths.talosctl
        p.write_text(script)
        os.chmod(p, 0o755)

    def stack_outputs(self, secrets: ClusterSecrets | None = None, controlplane: str | None = None) -> dict:
        """What ``pulumi stack output --json --show-secrets`` would print for this cluster."""
        secrets = secrets or ClusterSecrets.load(self.paths.secrets)
        controlplane = controlplane or self.paths.controlplane.read_text()
        return {
            out.BUCKET: self.info.bucket or "",
            out.SNAPSHOT_PREFIX: out.DEFAULT_SNAPSHOT_PREFIX,
            out.AWS_REGION: self.info.region,
            out.CLUSTER_NAME: self.info.cluster_name,
            out.CLUSTER_ENDPOINT: CLUSTER_ENDPOINT,
            out.NODE_INSTANCE_ID: "i-sandbox" + secrets.fingerprint[:8],
            out.NODE_PUBLIC_IP: self.info.public_ip,
            out.NODE_PRIVATE_IP: self.info.private_ip,
            out.TALOS_VERSION: self.info.talos_version,
            out.SNAPSHOT_AGE_RECIPIENTS: list(self.info.age_recipients),
            out.CONTROL_PLANE_NODES: [ClusterNode(name=m.hostname, private_ip=m.private_ip, public_ip=m.public_ip,
                                                  instance_id=m.instance_id,
                                                  availability_zone=m.availability_zone).to_output()
                                      for m in self._members(secrets)],
            out.TALOSCONFIG: self.paths.talosconfig.read_text(),
            out.KUBECONFIG: self.paths.kubeconfig.read_text(),
            out.CONTROLPLANE_CONFIG: controlplane,
            # A JSON string in talosctl's secrets-bundle layout, as infra/talos.py exports it.
            out.TALOS_MACHINE_SECRETS: json.dumps(secrets.bundle, sort_keys=True),
        }

    def _write_outputs(self, secrets: ClusterSecrets, controlplane: str) -> None:
        write_private(self.paths.outputs, json.dumps(self.stack_outputs(secrets, controlplane), indent=2) + "\n")

    def _write_env(self) -> None:
        # <dir>/bin (the simulated talosctl) first, then the virtualenv `up` ran from, so `talos-dr` is found too.
        path = [str(self.paths.bin), *([str(venv_bin())] if venv_bin() else [])]
        lines = [f"# Source this file: . {self.paths.env}", 'export PATH="' + ":".join(path) + ':$PATH"']
        for k, v in self._env_vars().items():
            lines.append(f"export {k}='{v}'")
        write_private(self.paths.env, "\n".join(lines) + "\n")

    def _env_vars(self) -> dict[str, str]:
        env = {
            "TALOSCONFIG": str(self.paths.talosconfig),
            "AWS_ACCESS_KEY_ID": s3.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": s3.SECRET_KEY,
            "AWS_DEFAULT_REGION": self.info.region,
            "DR_STACK_OUTPUTS_FILE": str(self.paths.outputs),
            # Every path the DR commands write (snapshots, journal, lock, kubeconfig) is under this folder.
            "DR_TALOS_DIR": str(self.paths.talos_dir),
            "SANDBOX_ETCD_ENDPOINT": self.info.etcd_endpoint,
            "ETCDCTL_API": "3",
            "TALOS_SANDBOX_DIR": str(self.paths.root),
        }
        if self.info.s3_endpoint:
            env["AWS_ENDPOINT_URL_S3"] = self.info.s3_endpoint
            # moto's server answers every service it models on the same port: CloudWatch too, where the stack's
            # Lambda metrics and alarms live (read by `talos-dr status`).
            env["AWS_ENDPOINT_URL_CLOUDWATCH"] = self.info.s3_endpoint
        return env

    # --- properties ----------------------------------------------------------------------------------------

    @property
    def dir(self) -> Path:
        return self.paths.root

    @property
    def env(self) -> dict[str, str]:
        """``os.environ`` plus what ``<dir>/env`` exports (PATH with ``<dir>/bin`` first)."""
        env = dict(os.environ)
        env.update(self._env_vars())
        env["PATH"] = f"{self.paths.bin}{os.pathsep}{env.get('PATH', '')}"
        return env

    @property
    def etcd_endpoint(self) -> str:
        return self.info.etcd_endpoint

    @property
    def s3_endpoint(self) -> str | None:
        return self.info.s3_endpoint

    @property
    def bucket(self) -> str | None:
        return self.info.bucket

    @property
    def region(self) -> str:
        return self.info.region

    @property
    def node_ip(self) -> str:
        """The node's private IP: what `--nodes` names (and `health --control-plane-nodes`)."""
        return self.info.private_ip

    @property
    def private_ip(self) -> str:
        return self.info.private_ip

    @property
    def public_ip(self) -> str:
        """The Elastic IP: what the operator's talosctl dials (`--endpoints`; `--nodes` with `--insecure`)."""
        return self.info.public_ip

    @property
    def cluster_name(self) -> str:
        return self.info.cluster_name

    @property
    def talosconfig(self) -> Path:
        return self.paths.talosconfig

    @property
    def outputs_file(self) -> Path:
        return self.paths.outputs

    @property
    def env_file(self) -> Path:
        return self.paths.env

    @property
    def bin_dir(self) -> Path:
        return self.paths.bin

    @property
    def talosctl(self) -> Path:
        return self.paths.talosctl

    @property
    def controlplane_config(self) -> Path:
        """The control-plane machine config ``apply-config`` accepts (also the ``controlplaneConfig`` output)."""
        return self.paths.controlplane

    @property
    def node(self) -> Node:
        return Node(self.paths.root)

    # --- several nodes -------------------------------------------------------------------------------------

    def _members(self, secrets: ClusterSecrets | None = None) -> list[Member]:
        secrets = secrets or ClusterSecrets.load(self.paths.secrets)
        out = []
        for i in range(1, self.info.node_count + 1):
            v = self.info.for_node(i)
            # Node 1 keeps the instance id a one-node sandbox always had; a replaced instance gets a new one.
            instance = v.instance_id or "i-sandbox" + secrets.fingerprint[:8] + ("" if i == 1 else f"{i:02d}")
            zone = ZONES[(i - 1) % len(ZONES)] if self.info.node_count > 1 else ""
            out.append(Member(i, v.hostname, v.private_ip, v.public_ip, v.apid_endpoint, instance, zone))
        return out

    @property
    def members(self) -> list[Member]:
        """Every control-plane node (bootstrap node first): ``.index``, ``.hostname``, ``.private_ip``,
        ``.public_ip``, ``.apid_endpoint`` (``.instance_id``, ``.availability_zone``)."""
        return self._members()

    def node_at(self, i: int) -> Node:
        """Node ``i`` (1-based) as a ``sandbox.node.Node``; ``node_at(1)`` is ``sb.node``."""
        if not 1 <= i <= self.info.node_count:
            raise SandboxError(f"the sandbox has {self.info.node_count} node(s): there is no node {i}")
        return Node(self.paths.root, i)

    def nodes(self) -> list[Node]:
        return [Node(self.paths.root, i) for i in range(1, self.info.node_count + 1)]

    def lose(self, i: int, disk: bool = False) -> None:
        """Node ``i`` powers off (unreachable, its etcd stopped, its data kept; ``power_on(i)`` brings it back) or,
        with ``disk=True``, its instance is terminated and its disks lost (only ``replace_instance(i)`` brings a
        node back)."""
        self.node_at(i).lose(disk=disk)

    def set_machine_type(self, i: int, kind: str) -> None:
        """Make node ``i``'s MachineType ``kind`` ("controlplane", "init", "worker"): a test's node built from an
        older `init` config (`get machinetype` shows it)."""
        if kind not in ("controlplane", "init", "worker"):
            raise SandboxError(f"machine type must be controlplane, init or worker, not {kind!r}")
        with self.node_at(i).locked() as st:
            st.machine_type = kind

    def settle(self) -> None:
        """Touch every node once (each settles: boots, joins, gets promoted), as the nodes' own loops would."""
        for n in self.nodes():
            n.snapshot_state()

    def _answering(self) -> str:
        """The client URL of a member that answers (on a multi-node sandbox: one with a leader if any)."""
        if self.info.node_count == 1:
            return self.etcd_endpoint
        from sandbox import membership

        nodes = self.nodes()
        found = membership.answering_endpoint(nodes, leader=True) or membership.answering_endpoint(nodes)
        if found is None:
            raise etcd.EtcdFailure("no etcd member of the sandbox answers")
        return found

    def talosctl_on(self, i: int, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """This sandbox's talosctl aimed at node ``i`` as the operator addresses it: ``-n <private IP>
        -e <its Elastic IP>``."""
        m = self.members[i - 1]
        return self.talosctl_run("-n", m.private_ip, "-e", m.apid_endpoint, *args, timeout=timeout)

    def wait_voters(self, count: int | None = None, timeout: float = 30) -> list[dict]:
        """Settle every node until the cluster has ``count`` (default: every node) voting members, no learner, each
        member's etcd running; returns ``etcd_members()``. TimeoutError says what it last saw."""
        count = self.info.node_count if count is None else count
        deadline = time.monotonic() + timeout
        seen: object = None
        while True:
            self.settle()
            try:
                members = self.etcd_members()
                seen = [(m["name"], "learner" if m["is_learner"] else "voter") for m in members]
                if len(members) == count and not any(m["is_learner"] or not m["name"] for m in members):
                    down = [m["name"] for m in members if not _answers(m["client_urls"])]
                    if not down:
                        return members
                    seen = f"{seen}, not answering: {down}"
            except etcd.EtcdFailure as exc:
                seen = str(exc)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"wanted {count} voting members within {timeout}s; last saw {seen}")
            time.sleep(0.1)

    def etcd_members(self) -> list[dict]:
        """The cluster's members from a member that answers: [{"id" (16 hex digits, as talosctl prints it),
        "name", "peer_urls", "client_urls", "is_learner"}]."""
        members = etcd.member_list(self._answering(), require_leader=False)
        return [{**m, "id": f"{m['id']:016x}"} for m in members]

    # --- etcd helpers --------------------------------------------------------------------------------------

    def put(self, key: str, value: str | bytes) -> None:
        etcd.put(self._answering(), key, value)

    def delete_prefix(self, prefix: str) -> int:
        return etcd.delete_prefix(self._answering(), prefix)

    def get_prefix(self, prefix: str) -> dict[str, bytes | str]:
        """Keys under ``prefix``; values decoded to str when they are UTF-8, else bytes."""
        out: dict[str, bytes | str] = {}
        for k, v in etcd.get_prefix(self._answering(), prefix).items():
            try:
                out[k] = v.decode("utf-8")
            except UnicodeDecodeError:
                out[k] = v
        return out

    def keys(self, prefix: str = "/registry/") -> list[str]:
        return sorted(etcd.get_prefix(self._answering(), prefix))

    def seed_data(self) -> dict[str, bytes]:
        """The keys and values ``up`` seeded (deterministic for this cluster's secrets)."""
        secrets = ClusterSecrets.load(self.paths.secrets)
        return seed_data(secrets.bundle["secrets"]["secretboxencryptionsecret"].encode())

    def etcdctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return etcd.etcdctl(*args, endpoint=self.etcd_endpoint)

    # --- node helpers --------------------------------------------------------------------------------------

    def set_faults(self, node: int = 1, **kw) -> dict:
        """Merge ``kw`` into node ``node``'s ``faults.json`` (a value of None removes a key). See ``sandbox.faults``."""
        path = self.node_at(node).paths.faults
        current = faults.load(path)
        current.update(kw)
        current = {k: v for k, v in current.items() if v is not None}
        faults.save(path, current)
        return current

    def raise_nospace_alarm(self) -> int:
        """Fill the node's etcd until etcd itself raises NOSPACE (start the sandbox with a small
        ``etcd_quota_bytes``); returns how many values went in. The alarm stays, as on a real node, until disarmed."""
        return etcd.fill_until_nospace(self.etcd_endpoint)

    def etcd_alarms(self) -> list[str]:
        """The alarms the node's etcd lists now."""
        return etcd.alarms(self.etcd_endpoint)

    def clear_faults(self, node: int | None = None) -> None:
        """Clear node ``node``'s faults (every node's when None)."""
        for n in self.nodes() if node is None else [self.node_at(node)]:
            faults.save(n.paths.faults, {})

    def node_stage(self) -> str:
        """The node's stage now: a Talos stage (running, maintenance, resetting, rebooting, booting, shutting down) or
        ``halted`` / ``unbootable``."""
        return self.node.snapshot_state().stage

    def node_view(self):
        return self.node.snapshot_state()

    def node_state(self) -> State:
        """The raw persisted state (resets done, whether the whole disk was ever wiped, ...)."""
        with self.node.locked() as st:
            return st

    def power_on(self, i: int = 1) -> None:
        """Boot halted node ``i`` (as starting the EC2 instance would)."""
        self.node_at(i).power_on()

    def replace_instance(self, i: int | str = "127.0.0.12") -> None:
        """``replace_instance(i)`` (an int): node ``i``'s instance is replaced by a new one with the same private IP
        (the HA stack pins each node's address), configured by `pulumi up`, an empty etcd: it joins the cluster on its
        own when a quorum answers (Talos's join loop), else waits for a bootstrap. ``replace_instance("a.b.c.d")``
        (a str): the one-node stack's replacement, with a new private IP (below)."""
        if isinstance(i, int):
            self.node_at(i).replace()
            # A new instance: a new instance id in the stack's outputs (same name, addresses and zone).
            self.info.update_node(i, instance_id="i-sandbox" + os.urandom(4).hex() + f"{i:02d}")
            self.info.save(self.paths)
            self._write_outputs(ClusterSecrets.load(self.paths.secrets), self.paths.controlplane.read_text())
            return
        self._replace_with_new_ip(i)

    def _replace_with_new_ip(self, private_ip: str) -> None:
        """What `pulumi up` does when the instance is gone and the stack does not pin its private IP: a new instance
        on a new root disk. EC2 gives an instance launched without a private IP "an available address from the
        subnet's IPv4 range" (Amazon EC2 User Guide, "Private IPv4 addresses"), so ``private_ip`` changes, and
        with it the hostname IMDS reports (``ip-a-b-c-d``, sandbox/kube.py). The Elastic IP moves to it; the machine
        config is applied again, so the node boots configured, with an empty etcd waiting for its bootstrap (which
        `pulumi up` sends next: bootstrap it with ``talosctl_run("bootstrap")``). The stack's outputs and the
        talosconfig name the new private IP, as the `up` rewrites them."""
        node = self.node
        with node.locked() as st:
            node._stop_etcd(st)
            shutil.rmtree(self.paths.etcd_data, ignore_errors=True)
            shutil.rmtree(self.paths.recover_dir, ignore_errors=True)
            self.info.private_ip = private_ip
            self.info.hostname = kube.aws_hostname(private_ip)
            self.info.save(self.paths)
            node.info = self.info
            now = time.time()
            r = float(self.info.reboot_seconds)
            st.stage, st.configured, st.bootstrap, st.etcd_health = "running", True, None, "?"
            st.timeline, st.target = [[now, "down"], [now + 0.85 * r, "booting"], [now + r, "final"]], "running"
            st.etcd_events = []
        secrets = ClusterSecrets.load(self.paths.secrets)
        write_private(self.paths.talosconfig, with_addresses(self.paths.talosconfig.read_text(),
                                                             self.info.apid_endpoint, private_ip))
        self._write_outputs(secrets, self.paths.controlplane.read_text())

    def wait_stage(self, *stages: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            s = self.node_stage()
            if s in stages:
                return s
            if time.monotonic() >= deadline:
                raise TimeoutError(f"node stage is {s!r}, wanted one of {stages} within {timeout}s")
            time.sleep(0.05)

    def calls(self) -> list[dict]:
        """Every talosctl call made against this sandbox: {"t", "argv", "exit", "error"}."""
        try:
            text = self.paths.calls.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def issue_talosconfig(self, path: str | os.PathLike[str], roles: list[str], context: str | None = None) -> Path:
        """Write a talosconfig with a client certificate for ``roles`` (e.g. ``["os:etcd:backup"]``)."""
        secrets = ClusterSecrets.load(self.paths.secrets)
        p = Path(path)
        write_private(p, with_addresses(secrets.talosconfig(self.node_ip, roles, context), self.info.apid_endpoint,
                                        self.private_ip))
        return p

    def talosctl_run(self, *args: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run this sandbox's talosctl with its env."""
        return subprocess.run(
            [str(self.paths.talosctl), *args], env=self.env, capture_output=True, text=True, timeout=timeout,
            check=check,
        )

    # --- status --------------------------------------------------------------------------------------------

    def _etcd_pid(self) -> int | None:
        try:
            return State.load(self.paths.state).etcd_pid
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        return (any(self.pids_alive().values()) or procs.alive(self.info.s3_pid, s3.MARKER)
                or procs.alive(self.info.kube_pid, kube_apiserver.MARKER))

    def pids_alive(self) -> dict[str, bool]:
        """Every node's etcd and apid: {"etcd-1": alive, "apid-1": alive, ...}."""
        out = {}
        for i in range(1, self.info.node_count + 1):
            npaths, view = self.paths.for_node(i), self.info.for_node(i)
            try:
                pid = State.load(npaths.state).etcd_pid
            except (OSError, ValueError):
                pid = None
            out[f"etcd-{i}"] = procs.alive(pid, str(npaths.etcd_data))
            out[f"apid-{i}"] = procs.alive(view.apid_pid, node_apid.MARKER)
        return out

    def _pids_text(self) -> str:
        return f"etcd pid {self._etcd_pid()}, s3 pid {self.info.s3_pid}, apid pid {self.info.apid_pid}"

    def status(self) -> dict:
        """What runs, where, and the node's stage."""
        etcd_pid = self._etcd_pid()
        etcd_alive = procs.alive(etcd_pid, str(self.paths.etcd_data))
        s3_alive = procs.alive(self.info.s3_pid, s3.MARKER)
        try:
            view = self.node.snapshot_state()
            stage, reachable = view.stage, view.reachable
        except (OSError, ValueError):
            stage, reachable = "unknown", False
        key_count = None
        if etcd_alive:
            try:
                key_count = etcd.count_prefix(self.etcd_endpoint, "/registry/")
            except etcd.EtcdFailure:
                key_count = None
        return {
            "dir": str(self.dir),
            "running": etcd_alive or s3_alive,
            "etcd": {"pid": etcd_pid, "alive": etcd_alive, "endpoint": self.etcd_endpoint,
                     "client_port": self.info.etcd_client_port, "peer_port": self.info.etcd_peer_port,
                     "keys": key_count},
            "s3": {"pid": self.info.s3_pid, "alive": s3_alive, "endpoint": self.s3_endpoint, "bucket": self.bucket},
            "apid": {"pid": self.info.apid_pid, "alive": procs.alive(self.info.apid_pid, node_apid.MARKER),
                     "endpoint": f"{self.public_ip}:{self.info.apid_port}"},
            "kube": {"pid": self.info.kube_pid, "alive": procs.alive(self.info.kube_pid, kube_apiserver.MARKER),
                     "endpoint": f"{self.public_ip}:{self.info.kube_port}"},
            "node": {"ip": self.node_ip, "public_ip": self.public_ip, "stage": stage, "reachable": reachable,
                     "talosctl": str(self.talosctl)},
            "env_file": str(self.env_file),
            "outputs_file": str(self.outputs_file),
            "nodes": self._node_status(),
        }

    def _node_status(self) -> list[dict]:
        """Each node: addresses, stage, etcd and apid pids (``status()["nodes"]``, node 1 first)."""
        out = []
        for m in self.members:
            node = self.node_at(m.index)
            try:
                view = node.snapshot_state()
                stage, reachable = view.stage, view.reachable
                pid = State.load(node.paths.state).etcd_pid
            except (OSError, ValueError):
                stage, reachable, pid = "unknown", False, None
            out.append({"index": m.index, "hostname": m.hostname, "ip": m.private_ip, "public_ip": m.public_ip,
                        "stage": stage, "reachable": reachable, "etcd_pid": pid,
                        "etcd_alive": procs.alive(pid, str(node.paths.etcd_data)),
                        "apid_pid": node.info.apid_pid, "apid_alive": procs.alive(node.info.apid_pid, node_apid.MARKER),
                        "apid_endpoint": m.apid_endpoint})
        return out
