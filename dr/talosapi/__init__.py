"""A minimal Talos API (apid) client in Python: just ``EtcdSnapshot``, over mutual TLS."""

from dr.talosapi.client import (
    APID_PORT,
    SNAPSHOT_ROLES,
    SnapshotResult,
    TalosClient,
    TalosCredentials,
    check_client_certificate,
    map_rpc_error,
)

__all__ = [
    "APID_PORT",
    "SNAPSHOT_ROLES",
    "SnapshotResult",
    "TalosClient",
    "TalosCredentials",
    "check_client_certificate",
    "map_rpc_error",
]
