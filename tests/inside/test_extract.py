"""extract on the sandbox: a Secret deleted after the snapshot comes back as YAML whose data is what was written,
decrypted with the stack's secretbox key; a wrong key is a clear error that writes nothing."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import yaml
from nacl.secret import SecretBox

from dr.commands import backup, extract
from dr.core import kubeproto
from dr.core.errors import ExitCode
from tests.support.tools import run_cli

WRITTEN = {"password": b"hunter2-\x00\xffbinary", "user": b"admin"}
KEY = "/registry/secrets/demo/db-credentials"


def _stack_key(sb) -> bytes:
    outputs = json.loads(Path(sb.outputs_file).read_text())
    return base64.b64decode(json.loads(outputs["talosMachineSecrets"])["secrets"]["secretboxencryptionsecret"])


def _write_secret(sb) -> None:
    """A Secret as kube-apiserver on Talos stores it: protobuf in the k8s\\0 envelope, sealed with NaCl secretbox
    under key2 with a random nonce (built here with NaCl directly)."""
    plain = kubeproto.encode({"kind": "Secret", "apiVersion": "v1", "type": "Opaque",
                              "metadata": {"name": "db-credentials", "namespace": "demo", "uid": "u-1",
                                           "creationTimestamp": "2026-11-01T00:00:00Z", "labels": {"app": "db"}},
                              "data": {k: base64.b64encode(v).decode() for k, v in WRITTEN.items()}})
    nonce = os.urandom(24)
    sealed = SecretBox(_stack_key(sb)).encrypt(plain, nonce).ciphertext
    sb.put(KEY, b"k8s:enc:secretbox:v1:key2:" + nonce + sealed)


def _snapshot() -> Path:
    assert run_cli(backup.main).code == 0
    return max(Path(".talos/snapshots").glob("etcd-snapshot-*.db"), key=lambda p: p.stat().st_mtime_ns)


def test_deleted_secret_comes_back_as_yaml_with_its_data(sandbox_env, tmp_path):
    sb = sandbox_env
    _write_secret(sb)
    snap = _snapshot()
    assert sb.delete_prefix(KEY) == 1
    out = tmp_path / "restored"
    res = run_cli(extract.main, str(snap), "--namespace", "demo", "-o", str(out))
    assert res.code == 0, res
    path = out / "demo" / "secret-db-credentials.yaml"
    assert path.stat().st_mode & 0o777 == 0o600
    doc = yaml.safe_load(path.read_text())
    assert {k: base64.b64decode(v) for k, v in doc["data"].items()} == WRITTEN
    assert doc["kind"] == "Secret" and doc["apiVersion"] == "v1" and doc["type"] == "Opaque"
    assert doc["metadata"] == {"name": "db-credentials", "namespace": "demo", "labels": {"app": "db"}}
    # The seeded ones too: every Secret and ConfigMap of the namespace, each decoded from what the seed wrote.
    seeded = sb.seed_data()
    for key in seeded:
        parts = key.split("/")
        if parts[2] in ("secrets", "configmaps") and parts[3] == "demo":
            kind = "secret" if parts[2] == "secrets" else "configmap"
            assert (out / "demo" / f"{kind}-{parts[4]}.yaml").is_file()
    cm = yaml.safe_load((out / "demo" / "configmap-web-config.yaml").read_text())
    assert cm["data"] == {"config": "# demo/web-config\nkey: value\n"}
    # Values never reach the terminal; names and other types do.
    for v in WRITTEN.values():
        assert base64.b64encode(v).decode() not in res.out + res.err
    assert "db-credentials" in res.out and "not extracted" in res.out and "deployments" in res.out
    # Again into the same folder: nothing is overwritten.
    before = path.read_bytes()
    again = run_cli(extract.main, str(snap), "--namespace", "demo", "-o", str(out))
    assert again.code == ExitCode.LOCAL_PATH and path.read_bytes() == before


def test_name_and_type_filters_and_json(sandbox_env, tmp_path):
    sb = sandbox_env
    _write_secret(sb)
    snap = _snapshot()
    res = run_cli(extract.main, str(snap), "-n", "demo", "--type", "secrets", "--name", "db-credentials",
                  "--name", "nope", "-o", str(tmp_path / "o"), "--json")
    assert res.code == 0, res
    doc = json.loads(res.out)
    assert [w["name"] for w in doc["written"]] == ["db-credentials"] and doc["written"][0]["decrypted"]
    assert doc["written"][0]["keys"] == ["password", "user"] and doc["not_found"] == ["nope"]
    assert list((tmp_path / "o" / "demo").iterdir()) == [tmp_path / "o" / "demo" / "secret-db-credentials.yaml"]
    res = run_cli(extract.main, str(snap), "-n", "nowhere", "-o", str(tmp_path / "n"))
    assert res.code == ExitCode.NOTHING_MATCHED and not (tmp_path / "n").exists()
    res = run_cli(extract.main, str(snap), "-n", "demo", "--type", "pods", "-o", str(tmp_path / "p"))
    assert res.code == ExitCode.CONFIG and "only Secrets and ConfigMaps" in res.err


def test_wrong_or_missing_key_writes_nothing(sandbox_env, tmp_path):
    sb = sandbox_env
    _write_secret(sb)
    snap = _snapshot()
    other = tmp_path / "secrets.yaml"
    other.write_text(yaml.safe_dump({"secrets": {"secretboxencryptionsecret": base64.b64encode(os.urandom(32))
                                                 .decode()}}))
    res = run_cli(extract.main, str(snap), "-n", "demo", "-o", str(tmp_path / "w"), "--secrets-file", str(other))
    assert res.code == ExitCode.WRONG_SECRETS_KEY, res
    assert "not this cluster's key" in res.err and not (tmp_path / "w").exists()
    # The right key from a talosctl secrets bundle file works the same as the stack output.
    outputs = json.loads(Path(sb.outputs_file).read_text())
    right = tmp_path / "right.yaml"
    right.write_text(yaml.safe_dump(json.loads(outputs["talosMachineSecrets"])))
    res = run_cli(extract.main, str(snap), "-n", "demo", "--type", "secrets", "-o", str(tmp_path / "r"),
                  "--secrets-file", str(right))
    assert res.code == 0, res
    # No key at all: ConfigMaps still come out; Secrets say which key is missing.
    empty = tmp_path / "empty.yaml"
    empty.write_text(yaml.safe_dump({"secrets": {}}))
    res = run_cli(extract.main, str(snap), "-n", "demo", "--type", "configmaps", "-o", str(tmp_path / "c"),
                  "--secrets-file", str(empty))
    assert res.code == 0, res
    res = run_cli(extract.main, str(snap), "-n", "demo", "-o", str(tmp_path / "s"), "--secrets-file", str(empty))
    assert res.code == ExitCode.NO_SECRETS_KEY and not (tmp_path / "s").exists()


def test_key_from_the_recovery_kit(sandbox_env, tmp_path):
    import pyrage.x25519 as x25519

    from dr.adapters import s3 as s3_adapter
    from dr.core import recovery_kit as kits
    from tests.support.snapshots import age_keygen

    sb = sandbox_env
    _write_secret(sb)
    snap = _snapshot()
    bundle = json.loads(json.loads(Path(sb.outputs_file).read_text())["talosMachineSecrets"])
    age = age_keygen(tmp_path)
    kit = kits.Kit(project="talos-dr", stack="prod", cluster_name=sb.cluster_name, region=sb.region, bucket=sb.bucket,
                   secrets_bundle=kits.bundle_yaml(bundle))
    s3_adapter.make_client(sb.region).put_object(Bucket=sb.bucket, Key=kits.kit_key(sb.cluster_name),
                                                 Body=kits.seal(kit, [x25519.Recipient.from_str(age.recipient)]))
    res = run_cli(extract.main, str(snap), "-n", "demo", "--type", "secrets", "--name", "db-credentials",
                  "-o", str(tmp_path / "k"), "--from-kit", "--identity", str(age.identity_file))
    assert res.code == 0, res
    assert "recovery kit" in res.out
    doc = yaml.safe_load((tmp_path / "k" / "demo" / "secret-db-credentials.yaml").read_text())
    assert {k: base64.b64decode(v) for k, v in doc["data"].items()} == WRITTEN
    res = run_cli(extract.main, str(snap), "-n", "demo", "--type", "secrets", "-o", str(tmp_path / "no-id"),
                  "--from-kit")
    assert res.code == ExitCode.NO_SECRETS_KEY and "--identity" in res.err
