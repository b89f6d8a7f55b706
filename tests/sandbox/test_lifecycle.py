"""up / status / down through the CLI, the files up writes, and two sandboxes side by side."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import yaml

from dr.core import outputs as out
from sandbox import procs, s3
from sandbox.api import AlreadyRunning, Sandbox
from sandbox.testing import require_etcd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sandbox", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


def ctx_ca(sb) -> str:
    tc = yaml.safe_load(sb.talosconfig.read_text())
    return tc["contexts"][tc["context"]]["ca"]


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.slow
def test_cli_up_status_down_and_a_second_sandbox_at_once(tmp_path):
    require_etcd()
    d1 = tmp_path / "one"
    r = cli("up", "--dir", str(d1), "--reboot-seconds", "0.3")
    try:
        assert r.returncode == 0, r.stderr
        assert "sandbox up in" in r.stdout
        sb = Sandbox.load(d1)

        # outputs.json: every stack output, flat, 0600, pointing at this sandbox
        outputs = json.loads(sb.outputs_file.read_text())
        assert set(outputs) == set(out.ALL_OUTPUTS)
        assert mode(sb.outputs_file) == 0o600 and mode(sb.talosconfig) == 0o600
        assert outputs[out.BUCKET] == sb.bucket and outputs[out.SNAPSHOT_PREFIX] == "snapshots/"
        # two addresses, as on AWS: the Elastic IP the operator dials, the private IP the node knows itself by
        assert (outputs[out.NODE_PUBLIC_IP], outputs[out.NODE_PRIVATE_IP]) == ("127.0.0.3", "127.0.0.2")
        assert outputs[out.NODE_INSTANCE_ID].startswith("i-sandbox")
        assert outputs[out.TALOSCONFIG] == sb.talosconfig.read_text()
        bundle = json.loads(outputs[out.TALOS_MACHINE_SECRETS])
        assert bundle["certs"]["os"]["crt"] == ctx_ca(sb) and bundle["secrets"]["secretboxencryptionsecret"]
        cp = yaml.safe_load(outputs[out.CONTROLPLANE_CONFIG])
        assert cp["machine"]["type"] == "controlplane" and cp["cluster"]["clusterName"] == sb.cluster_name
        tc = yaml.safe_load(sb.talosconfig.read_text())
        ctx = tc["contexts"][tc["context"]]
        # as infra/talos.py writes it (with the port only when another sandbox's apid holds 50000)
        assert ctx["endpoints"] == [sb.info.apid_endpoint] and ctx["nodes"] == ["127.0.0.2"]
        assert sb.info.apid_endpoint in ("127.0.0.3", f"127.0.0.3:{sb.info.apid_port}")
        assert ctx["ca"] and ctx["crt"] and ctx["key"]

        # env file: sourced by sh, it puts the fake talosctl first and points at the outputs
        probe = subprocess.run(["sh", "-c", f". {sb.env_file}; command -v talosctl; echo $DR_STACK_OUTPUTS_FILE; "
                                "echo $AWS_ENDPOINT_URL_S3; echo $SANDBOX_ETCD_ENDPOINT; echo $TALOSCONFIG"],
                               capture_output=True, text=True, check=True)
        assert probe.stdout.split() == [str(sb.talosctl), str(sb.outputs_file), sb.s3_endpoint, sb.etcd_endpoint,
                                        str(sb.talosconfig)]

        # S3: the bucket exists and is versioned
        c = s3.client(sb.s3_endpoint)
        assert c.get_bucket_versioning(Bucket=sb.bucket)["Status"] == "Enabled"

        # etcd is seeded with Kubernetes-shaped keys
        keys = sb.keys()
        assert len(keys) >= 30 and "/registry/namespaces/kube-system" in keys
        assert sb.get_prefix("/registry/secrets/")["/registry/secrets/demo/web-tls"][:26] == \
            b"k8s:enc:secretbox:v1:key2:"  # the key name Talos v1.13.9 gives its secretbox key (sandbox/seed.py)

        st = cli("status", "--dir", str(d1), "--json")
        assert st.returncode == 0
        status = json.loads(st.stdout)
        assert status["running"] and status["etcd"]["alive"] and status["s3"]["alive"]
        assert status["node"]["stage"] == "running" and status["etcd"]["keys"] == len(keys)

        again = cli("up", "--dir", str(d1))
        assert again.returncode == 1 and "already running" in again.stderr

        # a second sandbox runs next to the first, on other ports, with its own PKI
        with Sandbox.up(tmp_path / "two", reboot_seconds=0.3) as sb2:
            assert {sb2.etcd_endpoint, sb2.s3_endpoint}.isdisjoint({sb.etcd_endpoint, sb.s3_endpoint})
            sb2.put("/registry/configmaps/demo/only-in-two", "x")
            assert "/registry/configmaps/demo/only-in-two" not in sb.keys()
            cross = subprocess.run([str(sb2.talosctl), "--talosconfig", str(sb.talosconfig), "version"],
                                   env=sb2.env, capture_output=True, text=True)
            assert cross.returncode == 1 and "x509: certificate signed by unknown authority" in cross.stderr
        assert not procs.alive(sb2.info.s3_pid) and sb.running()
        try:
            Sandbox.up(d1)
            raise AssertionError("up on a running dir must refuse")
        except AlreadyRunning:
            pass
        etcd_pid, s3_pid = sb.status()["etcd"]["pid"], sb.info.s3_pid
    finally:
        down = cli("down", "--dir", str(d1))
    assert down.returncode == 0 and "stopped" in down.stdout and "etcd" in down.stdout
    assert not procs.alive(etcd_pid) and not procs.alive(s3_pid)
    again = cli("down", "--dir", str(d1))
    assert again.returncode == 0 and "was not running" in again.stdout
    st = json.loads(cli("status", "--dir", str(d1), "--json").stdout)
    assert not st["running"]
    # the node is off after down: talosctl is refused
    r = subprocess.run([str(d1 / "bin" / "talosctl"), "version"], env=Sandbox.load(d1).env, capture_output=True,
                       text=True)
    assert r.returncode == 1 and "connection refused" in r.stderr


def test_down_without_sandbox_is_a_no_op(tmp_path):
    r = cli("down", "--dir", str(tmp_path / "none"))
    assert r.returncode == 0 and "nothing to stop" in r.stdout
    r = cli("status", "--dir", str(tmp_path / "none"))
    assert r.returncode == 1 and "no sandbox" in r.stderr


def test_require_etcd_fails_in_ci_and_skips_elsewhere(monkeypatch):
    import pytest

    from sandbox import testing

    monkeypatch.setattr(testing.etcd, "binaries", lambda: (None, None))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required in CI"):
        testing.require_etcd()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        testing.require_etcd()


def test_s3_starts_again_on_another_port_when_its_port_was_taken(tmp_path):
    """procs.free_port() finds a port free only at that moment: when another process binds it first, moto exits
    ("Address already in use") and the sandbox starts it again on another port instead of failing."""
    import socket

    from sandbox import procs, s3

    taken = socket.socket()  # bound, not listening: as another program's socket holds it (CI saw this)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    log = tmp_path / "s3.log"
    pid = s3.spawn(port, log)
    try:
        pid, new_port, answers = s3.ready_or_respawn(pid, port, log)
        assert answers and new_port != port and procs.port_open(new_port)
    finally:
        procs.stop(pid, s3.MARKER)
        taken.close()
