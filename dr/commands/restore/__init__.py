"""``python -m dr.restore``: put a snapshot back into the node's etcd.

Parts: ``probe`` (ask the node where it is; the states are ``dr.core.node_state``), the pure decision table
(``dr.core.restore_plan``), ``prompt`` (the question), ``steps`` (the actions), ``command`` (the loop and the
command line).
"""

from dr.commands.restore.command import PROG, Restore, build_parser, main

__all__ = ["PROG", "Restore", "build_parser", "main"]
