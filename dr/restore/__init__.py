"""``python -m dr.restore``: put a snapshot back into the node's etcd.

Layers: ``state`` (probe the node), ``plan`` (the pure decision table), ``prompt`` (the question), ``steps`` (the
actions), ``command`` (the loop and the command line).
"""

from dr.restore.command import PROG, Restore, main

__all__ = ["PROG", "Restore", "main"]
