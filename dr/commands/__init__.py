"""The commands (backup, restore, verify, list) and what they share: ``cli`` (exit codes, progress), ``settings``
(flag > environment > talosconfig > stack output) and ``source`` (where a snapshot comes from)."""
