"""The node's real etcd: start, stop, snapshot, restore, and a small KV client.

Which etcd: ``SANDBOX_ETCD_BIN_DIR``, else the etcd 3.5 that `make etcd` unpacks (``dr.adapters.etcdlocal.etcd35_bin_dir()``,
the closest Debian packages to the 3.6 that Talos v1.13.9 runs) when it is there, else PATH (Debian bookworm's 3.4).
``SANDBOX_ETCD_BIN`` / ``SANDBOX_ETCDCTL_BIN`` still override the single programs (the bench wraps etcdctl).
Snapshot status and restore go through ``dr.adapters.etcdlocal`` with the same rules as dr.verify: etcdutl when the chosen
folder has it, else an etcdctl older than 3.6.

The KV client talks to etcd's gRPC-gateway (``/v3/kv/*`` JSON over HTTP), so no etcd client library is needed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from dr.adapters import etcdlocal
from dr.core.errors import DRError
from sandbox import procs


def bin_dir() -> Path | None:
    """The folder the node's etcd comes from: ``SANDBOX_ETCD_BIN_DIR``, else the etcd 3.5 cache when it holds etcd,
    else None (PATH)."""
    env = os.environ.get("SANDBOX_ETCD_BIN_DIR")
    if env:
        return Path(env)
    d = etcdlocal.etcd35_bin_dir()
    return d if (d / "etcd").is_file() else None


BIN_DIR = bin_dir()
SEARCH_PATH = str(BIN_DIR) if BIN_DIR else None  # for shutil.which; None is PATH
ETCD = os.environ.get("SANDBOX_ETCD_BIN") or (str(BIN_DIR / "etcd") if BIN_DIR else "etcd")
ETCDCTL = os.environ.get("SANDBOX_ETCDCTL_BIN") or (str(BIN_DIR / "etcdctl") if BIN_DIR else "etcdctl")


class EtcdFailure(RuntimeError):
    pass


def binaries() -> tuple[str | None, str | None]:
    """Paths of ``etcd`` and ``etcdctl`` (None when missing). ``missing()`` also checks snapshot status/restore."""
    return shutil.which(ETCD), shutil.which(ETCDCTL)


def missing() -> list[str]:
    """What the node's etcd lacks, one phrase each: etcd, etcdctl (snapshot save, health), and a tool with
    ``snapshot status``/``restore`` (etcdutl, or an etcdctl older than 3.6). Empty when all are there."""
    etcd_bin, etcdctl_bin = binaries()
    out = [f"{n} ({p})" for n, p, found in (("etcd", ETCD, etcd_bin), ("etcdctl", ETCDCTL, etcdctl_bin)) if not found]
    tools, refused = etcdlocal.snapshot_tools(SEARCH_PATH)
    if not tools:
        out.append("a tool with snapshot status/restore: " + "; ".join(refused))
    return out


def tool() -> str | None:
    """``etcdutl 3.5.16`` / ``etcdctl 3.4.23``: what status and restore run, or None."""
    tools, _ = etcdlocal.snapshot_tools(SEARCH_PATH)
    return tools[0].label if tools else None


def _ctl_env() -> dict[str, str]:
    env = dict(os.environ)
    env["ETCDCTL_API"] = "3"
    return env


def etcdctl(*args: str, endpoint: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    argv = [ETCDCTL]
    if endpoint:
        argv += ["--endpoints", endpoint, "--dial-timeout", "2s", "--command-timeout", "10s"]
    argv += list(args)
    return subprocess.run(argv, capture_output=True, text=True, env=_ctl_env(), timeout=timeout)


def peer_url(peer_port: int, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{peer_port}"


def client_url(client_port: int, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{client_port}"


def start(data_dir: Path, name: str, client_port: int, peer_port: int, log: Path, *, quota_bytes: int = 0,
          host: str = "127.0.0.1", initial_cluster: str | None = None, cluster_state: str = "new",
          wait_healthy: bool = True) -> int:
    """Start etcd on ``host``:``client_port`` (the same port after every restore) and wait until it answers.
    ``quota_bytes`` > 0 sets ``--quota-backend-bytes`` (what Talos's ``cluster.etcd.extraArgs`` can set; etcd's
    default is 2 GiB): a small one lets a test fill the DB until etcd raises its own NOSPACE alarm
    (``fill_until_nospace``). ``initial_cluster``/``cluster_state``: what a joining member starts with
    (services/etcd.go argsForControlPlane: ``existing`` and the member list of its MemberAddAsLearner).
    ``wait_healthy=False`` waits only until the process serves (a member of a cluster that has no leader yet, or a
    learner, is not healthy and still runs)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    client = client_url(client_port, host)
    peer = peer_url(peer_port, host)
    argv = [
        ETCD,
        "--name", name,
        "--data-dir", str(data_dir),
        "--listen-client-urls", client,
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", initial_cluster or f"{name}={peer}",
        "--initial-cluster-state", cluster_state,
        "--log-level", "warn",
        "--logger", "zap",
    ]  # fmt: skip
    if quota_bytes > 0:
        argv += ["--quota-backend-bytes", str(quota_bytes)]
    pid = procs.spawn(argv, log)
    ready = (lambda: healthy(client_port, host=host)) if wait_healthy else (lambda: serving(client_port, host))
    if not procs.wait_for(lambda: ready() or not procs.alive(pid), timeout=20):
        procs.stop(pid)
        raise EtcdFailure(f"etcd did not answer on {client} within 20s (log: {log})")
    if not procs.alive(pid):
        raise EtcdFailure(f"etcd exited at start (log: {log})")
    return pid


def serving(client_port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """etcd's client port answers ``/version`` (the process serves, whatever its raft state)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{host}:{client_port}/version", timeout=timeout) as r:
            return bool(r.read())
    except (OSError, ValueError):
        return False


def health_reason(client_port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> str | None:
    """None when etcd's ``/health`` says healthy, else its reason (``RAFT NO LEADER``) or why it did not answer."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{host}:{client_port}/health", timeout=timeout) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
        except ValueError:
            return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return f"etcd does not answer: {exc}"
    return None if body.get("health") in ("true", True) else str(body.get("reason") or "unhealthy")


def healthy(client_port: int, timeout: float = 1.0, host: str = "127.0.0.1") -> bool:
    """etcd answers on ``client_port``. An active alarm (NOSPACE restored with a snapshot) makes ``/health`` answer
    503 ``{"health":"false","reason":"ALARM NOSPACE"}``: etcd runs and serves reads, so that counts as up (Talos's own
    etcd health check is a quorum read, services/etcd.go:252-275)."""
    import urllib.error
    import urllib.request  # imported late: talosctl starts faster without it

    try:
        with urllib.request.urlopen(f"http://{host}:{client_port}/health", timeout=timeout) as r:
            return json.loads(r.read()).get("health") in ("true", True)
    except urllib.error.HTTPError as exc:
        try:
            return str(json.loads(exc.read()).get("reason", "")).startswith("ALARM")
        except ValueError:
            return False
    except (OSError, ValueError):
        return False


def endpoint_health(endpoint: str) -> tuple[bool, str]:
    """``etcdctl endpoint health``: (ok, one line)."""
    try:
        r = etcdctl("endpoint", "health", endpoint=endpoint, timeout=10)
    except subprocess.TimeoutExpired:
        return False, f"{endpoint} is unhealthy: timeout"
    out = (r.stdout + r.stderr).strip().splitlines()
    return r.returncode == 0, (out[-1] if out else f"etcdctl exit {r.returncode}")


def snapshot_save(endpoint: str, path: Path) -> None:
    r = etcdctl("snapshot", "save", str(path), endpoint=endpoint, timeout=120)
    if r.returncode != 0:
        raise EtcdFailure((r.stderr or r.stdout).strip() or f"etcdctl snapshot save exit {r.returncode}")


def snapshot_status(path: Path) -> dict:
    """``etcdutl`` (else etcdctl < 3.6) ``snapshot status -w json``: hash, revision, totalKey, totalSize."""
    try:
        st = etcdlocal.snapshot_status(path, search_path=SEARCH_PATH, timeout=60)
    except DRError as exc:
        raise EtcdFailure(exc.message) from None
    return {"hash": st.hash or 0, "revision": st.revision, "totalKey": st.total_keys, "totalSize": st.total_size}


def trailer_ok(path: Path) -> tuple[bool, str, str]:
    """(ok, expected, actual): whether the last 32 bytes are the SHA-256 of the rest."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        remaining = size - 32
        while remaining > 0:
            chunk = f.read(min(1 << 20, remaining))
            if not chunk:
                break
            h.update(chunk)
            remaining -= len(chunk)
        trailer = f.read(32)
    return h.digest() == trailer, trailer.hex(), h.hexdigest()


def restore(snapshot: Path, data_dir: Path, name: str, peer_port: int, *, skip_hash_check: bool = False,
            host: str = "127.0.0.1") -> None:
    """``etcdutl`` (else etcdctl < 3.6) ``snapshot restore`` into ``data_dir`` (which must not exist)."""
    try:
        etcdlocal.restore_snapshot(snapshot, data_dir, name, peer_url(peer_port, host), skip_hash_check=skip_hash_check,
                                   search_path=SEARCH_PATH, timeout=120)
    except DRError as exc:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise EtcdFailure(exc.message) from None
    os.chmod(data_dir, 0o700)


# --- KV over the gRPC gateway -------------------------------------------------------------------------------


def _b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _prefix_end(prefix: bytes) -> bytes:
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"


def _call(endpoint: str, path: str, body: dict, *, require_leader: bool = False, timeout: float = 10) -> dict:
    """One etcd v3 call over its gRPC gateway. ``require_leader``: the ``hasleader`` metadata clientv3's
    WithRequireLeader sets (client/v3/ctx.go), as a gateway header: without a leader etcd answers at once with
    ``etcdserver: no leader`` (server/etcdserver/api/v3rpc/interceptor.go) instead of waiting."""
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json"}
    if require_leader:
        headers["Grpc-Metadata-hasleader"] = "true"
    req = urllib.request.Request(f"{endpoint}/v3/{path}", data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise EtcdFailure(f"etcd {path} failed: {exc.code} {exc.read()[:200]!r}") from exc
    except OSError as exc:
        raise EtcdFailure(f"etcd at {endpoint} does not answer: {exc}") from exc


def put(endpoint: str, key: str | bytes, value: str | bytes) -> None:
    _call(endpoint, "kv/put", {"key": _b64(key), "value": _b64(value)})


def get_prefix(endpoint: str, prefix: str | bytes) -> dict[str, bytes]:
    p = prefix.encode() if isinstance(prefix, str) else prefix
    res = _call(endpoint, "kv/range", {"key": _b64(p), "range_end": _b64(_prefix_end(p))})
    out: dict[str, bytes] = {}
    for kv in res.get("kvs", []):
        out[base64.b64decode(kv["key"]).decode("utf-8", "replace")] = base64.b64decode(kv.get("value", ""))
    return out


def delete_prefix(endpoint: str, prefix: str | bytes) -> int:
    p = prefix.encode() if isinstance(prefix, str) else prefix
    res = _call(endpoint, "kv/deleterange", {"key": _b64(p), "range_end": _b64(_prefix_end(p))})
    return int(res.get("deleted", 0))


def count_prefix(endpoint: str, prefix: str | bytes = b"/") -> int:
    p = prefix.encode() if isinstance(prefix, str) else prefix
    res = _call(endpoint, "kv/range", {"key": _b64(p), "range_end": _b64(_prefix_end(p)), "count_only": True})
    return int(res.get("count", 0))


NOSPACE_ERROR = "database space exceeded"  # etcd's ErrNoSpace ("etcdserver: mvcc: database space exceeded")


def fill_until_nospace(endpoint: str, *, value_bytes: int = 512 * 1024, limit: int = 4096) -> int:
    """Put ``value_bytes`` values under ``/talos-dr-sandbox/fill/`` until etcd refuses one for lack of space (its
    quota reached: etcd raises the NOSPACE alarm itself); returns how many went in. Meant for a sandbox started with a
    small quota; ``limit`` bounds the loop when the quota is large."""
    value = b"\0" * value_bytes
    for i in range(limit):
        try:
            put(endpoint, f"/talos-dr-sandbox/fill/{i:06d}", value)
        except EtcdFailure as exc:
            if NOSPACE_ERROR in str(exc):
                return i
            raise
    raise EtcdFailure(f"etcd at {endpoint} took {limit} values of {value_bytes} bytes without reaching its quota")


def alarms(endpoint: str) -> list[str]:
    """The active alarms etcd lists (``etcdctl alarm list``): e.g. ["NOSPACE"]."""
    res = _call(endpoint, "maintenance/alarm", {"action": "GET"})
    return [str(a.get("alarm")) for a in res.get("alarms", [])]


def get_key(endpoint: str, key: str | bytes) -> bytes | None:
    """The value at exactly ``key``, or None."""
    k = key.encode() if isinstance(key, str) else key
    kvs = _call(endpoint, "kv/range", {"key": _b64(k)}).get("kvs", [])
    return base64.b64decode(kvs[0].get("value", "")) if kvs else None


def delete_key(endpoint: str, key: str | bytes) -> int:
    """Delete exactly ``key`` (not its prefix); the number deleted (0 or 1)."""
    k = key.encode() if isinstance(key, str) else key
    return int(_call(endpoint, "kv/deleterange", {"key": _b64(k)}).get("deleted", 0))


def alarm_members(endpoint: str) -> list[tuple[int, str]]:
    """The etcd cluster's active alarms, (member id, alarm name), from Maintenance.Alarm GET (etcd's own store:
    alarms live in the backend and survive ``snapshot restore``)."""
    res = _call(endpoint, "maintenance/alarm", {"action": "GET"})
    return [(int(a.get("memberID", 0)), str(a.get("alarm", ""))) for a in res.get("alarms", [])]


def activate_alarm(endpoint: str, alarm: str = "NOSPACE") -> None:
    """Raise an alarm the way etcd does when the backend reaches its quota (Maintenance.Alarm ACTIVATE)."""
    status = _call(endpoint, "maintenance/status", {})
    member = int(status.get("header", {}).get("member_id", 0))
    _call(endpoint, "maintenance/alarm", {"action": "ACTIVATE", "memberID": member, "alarm": alarm})


def deactivate_alarm(endpoint: str, alarm: str = "NOSPACE") -> None:
    """Maintenance.Alarm DEACTIVATE: what `etcdctl alarm disarm` (and `talosctl etcd alarm disarm`) send."""
    status = _call(endpoint, "maintenance/status", {})
    member = int(status.get("header", {}).get("member_id", 0))
    _call(endpoint, "maintenance/alarm", {"action": "DEACTIVATE", "memberID": member, "alarm": alarm})


# --- cluster membership (etcd's Cluster service over the gateway) ----------------------------------------------


def _error_text(exc: EtcdFailure) -> str:
    """The gRPC message inside a gateway error (``etcdserver: no leader``), else the whole text."""
    text = str(exc)
    start = text.find("etcdserver:")
    if start >= 0:
        end = text.find('"', start)
        return text[start:end if end > 0 else None]
    return text


def member_list(endpoint: str, *, require_leader: bool = True, timeout: float = 5) -> list[dict]:
    """Cluster.MemberList: [{"id" (int), "name", "peer_urls", "client_urls", "is_learner"}]. With ``require_leader``
    (what Talos's join loop and EtcdMemberList send) a member without a leader refuses: EtcdFailure
    ``etcdserver: no leader``."""
    try:
        res = _call(endpoint, "cluster/member/list", {}, require_leader=require_leader, timeout=timeout)
    except EtcdFailure as exc:
        raise EtcdFailure(_error_text(exc)) from None
    return [{"id": int(m["ID"]), "name": m.get("name", ""), "peer_urls": list(m.get("peerURLs") or []),
             "client_urls": list(m.get("clientURLs") or []), "is_learner": bool(m.get("isLearner"))}
            for m in res.get("members", [])]


def member_add_learner(endpoint: str, peer_urls: list[str]) -> int:
    """Cluster.MemberAdd with isLearner (clientv3 MemberAddAsLearner); the new member's id."""
    try:
        res = _call(endpoint, "cluster/member/add", {"peerURLs": peer_urls, "isLearner": True}, require_leader=True)
    except EtcdFailure as exc:
        raise EtcdFailure(_error_text(exc)) from None
    return int(res["member"]["ID"])


def member_remove(endpoint: str, member_id: int) -> None:
    try:
        _call(endpoint, "cluster/member/remove", {"ID": str(member_id)}, require_leader=True)
    except EtcdFailure as exc:
        raise EtcdFailure(_error_text(exc)) from None


def member_promote(endpoint: str, member_id: int) -> None:
    """Cluster.MemberPromote: refused until the learner has caught up with the leader."""
    try:
        _call(endpoint, "cluster/member/promote", {"ID": str(member_id)}, require_leader=True)
    except EtcdFailure as exc:
        raise EtcdFailure(_error_text(exc)) from None


def status(endpoint: str, timeout: float = 5) -> dict:
    """Maintenance.Status: member id, leader (0 without one), raft indexes, learner flag, errors."""
    res = _call(endpoint, "maintenance/status", {}, timeout=timeout)
    return {"member_id": int(res.get("header", {}).get("member_id", 0)), "leader": int(res.get("leader", 0)),
            "db_size": int(res.get("dbSize", 0)), "db_size_in_use": int(res.get("dbSizeInUse", 0)),
            "raft_index": int(res.get("raftIndex", 0)), "raft_term": int(res.get("raftTerm", 0)),
            "raft_applied_index": int(res.get("raftAppliedIndex", 0)), "is_learner": bool(res.get("isLearner")),
            "version": str(res.get("version", "")), "errors": list(res.get("errors") or [])}
