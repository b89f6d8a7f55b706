"""The scheduled snapshot Lambda pointed at a sandbox: its environment and the backup credential object, as the stack
writes them (infra/schedule.py), so the real handler runs against the simulated node and moto."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from dr.core.credentials import mint_backup_credential

CREDENTIAL_KEY = "credentials/etcd-backup.json"  # infra.bucket.CREDENTIAL_KEY


def lambda_env(sb, *, stall: float = 3.0, quota: int | None = None) -> dict[str, str]:
    """Write the credential object to the sandbox bucket and return the Lambda's environment for ``sb`` (the sandbox's
    own env, AWS endpoints included, must be applied too)."""
    from sandbox import s3
    from sandbox.pki import ClusterSecrets
    from snapshot_lambda import handler as lh

    secrets = ClusterSecrets.load(sb.node.paths.secrets)
    creds = mint_backup_credential(base64.b64decode(secrets.os_ca_crt), base64.b64decode(secrets.os_ca_key),
                                   datetime.now(UTC), cluster=sb.cluster_name)
    client = s3.client(sb.s3_endpoint, sb.region)
    client.put_object(Bucket=sb.bucket, Key=CREDENTIAL_KEY, Body=creds.to_json().encode())
    env = {lh.ENV_BUCKET: sb.bucket, lh.ENV_NODE: sb.public_ip, lh.ENV_PORT: str(sb.node.info.apid_port),
           lh.ENV_CREDENTIAL_KEY: CREDENTIAL_KEY, lh.ENV_CLUSTER: sb.cluster_name, lh.ENV_TIMEOUT: "60",
           lh.ENV_STALL_TIMEOUT: str(stall)}
    if quota is not None:
        env[lh.ENV_ETCD_QUOTA] = str(quota)
    return env
