"""Adapters: one module per thing outside this process (S3, talosctl, the Talos API, local etcd tools, the stack's
outputs, the lock file). They translate its failures into ``dr.core.errors`` and import only ``dr.core``."""
