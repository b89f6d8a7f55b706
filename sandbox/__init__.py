"""A local stand-in for the single-node Talos cluster, for tests and demos.

``python -m sandbox up --dir .sandbox`` starts, on loopback only, a real etcd seeded with Kubernetes-shaped keys,
a moto S3 server with the backup bucket, and a simulated Talos node: ``<dir>/bin/talosctl`` behaves like
``talosctl`` against a node whose state lives in ``<dir>/node/state.json``. ``sandbox.api.Sandbox`` is the
Python face of the same thing.
"""
