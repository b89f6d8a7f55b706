"""A minimal Talos API (apid) client in Python: just ``EtcdSnapshot``, over mutual TLS."""

from dr.adapters.talosapi.client import (
    APID_PORT,
    SNAPSHOT_ROLES,
    SnapshotResult,
    TalosClient,
    TalosCredentials,
    check_client_certificate,
    map_rpc_error,
    map_status,
)

__all__ = [
    "APID_PORT",
    "SNAPSHOT_ROLES",
    "SnapshotResult",
    "TalosClient",
    "TalosCredentials",
    "check_client_certificate",
    "map_rpc_error",
    "map_status",
]
