"""Fixtures for the scheduled-snapshot tests: a Talos-like OS CA, a real etcd with known keys, and the simulated
apid in front of it (mutual TLS on a loopback port)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dr.adapters.talosapi import TalosCredentials
from dr.core.credentials import issue_certificate, new_ca
from sandbox.apid import SimulatedApid
from tests.support.tools import start_etcd

KEYS = {f"/registry/configmaps/default/cm-{i}": f"value-{i}" for i in range(6)}
KEYS["/registry/namespaces/kube-system"] = "ns"


@pytest.fixture(scope="session")
def os_ca():
    """(cert PEM, key PEM) of a Talos-shaped OS CA (Ed25519, key in ``ED25519 PRIVATE KEY`` framing)."""
    return new_ca("talos")


@pytest.fixture(scope="session")
def make_creds(os_ca):
    """Client credentials for a role, signed by the OS CA (or another CA), optionally already expired."""

    def make(role: str | None = "os:etcd:backup", *, ca=None, expired: bool = False, trust=None) -> TalosCredentials:
        ca_cert, ca_key = ca or os_ca
        now = datetime.now(UTC)
        nb, na = (now - timedelta(days=30), now - timedelta(days=1)) if expired else (now - timedelta(hours=1), now + timedelta(days=1))
        cert, key = issue_certificate(ca_cert, ca_key, organization=role, common_name="test", not_before=nb, not_after=na)
        return TalosCredentials(ca_pem=(trust or os_ca)[0], cert_pem=cert, key_pem=key)

    return make


@pytest.fixture(scope="session")
def sched_etcd(tmp_path_factory):
    """A real etcd of our own (other suites write to the shared one) holding ``KEYS``."""
    e = start_etcd(tmp_path_factory.mktemp("sched-etcd"))
    try:
        for k, v in KEYS.items():
            e.put(k, v)
        yield e
    finally:
        e.proc.terminate()
        e.proc.wait(10)


@pytest.fixture(scope="session")
def apid_server(sched_etcd, os_ca, tmp_path_factory):
    """The simulated apid as Talos runs it: Ed25519 server key (OpenSSL + HTTP/2 backend)."""
    server = SimulatedApid(sched_etcd.endpoint, *os_ca, keep_dir=tmp_path_factory.mktemp("apid-served")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def grpc_apid_server(sched_etcd, os_ca, tmp_path_factory):
    """The simulated apid on grpcio's stack (ECDSA server key): what a grpcio client can talk to."""
    server = SimulatedApid(sched_etcd.endpoint, *os_ca, backend="grpcio",
                           keep_dir=tmp_path_factory.mktemp("grpc-apid-served")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def apid(apid_server):
    """The session's apid with its fault knobs reset around each test."""
    apid_server.fault = None
    yield apid_server
    apid_server.fault = None


CREDENTIAL_KEY = "credentials/etcd-backup.json"  # where infra/schedule.py writes it (infra.bucket.CREDENTIAL_KEY)


@pytest.fixture
def backup_credential(bucket, s3_client, os_ca):
    """The deterministic os:etcd:backup credential as the stack stores it, an object in the bucket; yields its key."""
    from dr.core.credentials import mint_backup_credential

    creds = mint_backup_credential(*os_ca, datetime.now(UTC), cluster="sandbox")
    s3_client.put_object(Bucket=bucket, Key=CREDENTIAL_KEY, Body=creds.to_json().encode(),
                         ContentType="application/json", ServerSideEncryption="AES256")
    return CREDENTIAL_KEY


@pytest.fixture
def runner_env(apid, bucket, backup_credential, monkeypatch):
    """The Lambda's environment, pointing at the simulated apid, the moto bucket and the credential in it."""
    from snapshot_lambda import handler as lh

    env = {lh.ENV_BUCKET: bucket, lh.ENV_NODE: apid.host, lh.ENV_PORT: str(apid.port),
           lh.ENV_CREDENTIAL_KEY: backup_credential, lh.ENV_CLUSTER: "sandbox", lh.ENV_TIMEOUT: "60"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def no_leftovers(s3_client, bucket: str) -> tuple[list, list]:
    """(objects, in-progress multipart uploads) in the bucket, the stack's credential object aside."""
    # ... and the pinned <prefix>latest copy, which only a completed snapshot leaves
    objs = [o for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])
            if o["Key"] != CREDENTIAL_KEY and not o["Key"].endswith("/latest")]
    uploads = s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return objs, uploads
