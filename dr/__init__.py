"""talos-dr's disaster-recovery commands, in three layers; imports only go down:

* ``dr.commands``: what a person runs (backup, restore, verify, list) and what they share (the command line,
  settings, where a snapshot comes from). ``python -m dr.backup`` (``dr/backup.py``, ...) starts them.
* ``dr.adapters``: thin wrappers of the outside world: S3, talosctl, the Talos API, the local etcd tools, the
  Pulumi stack's outputs, the lock file.
* ``dr.core``: pure logic, no I/O: snapshot names, retention, the hash trailer, the restore journal's record and
  the restore plan, backup freshness, certificate minting, the error table and the stack-output names.

Deploy-time code lives in ``infra/`` (its dynamic providers in ``infra/providers/``), the scheduled-snapshot Lambda
in ``snapshot_lambda/``.
"""
