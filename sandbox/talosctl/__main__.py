"""``python -m sandbox.talosctl``: the same entry point as the sandbox's ``bin/talosctl`` wrapper."""

import sys

from sandbox.talosctl.cli import main

sys.exit(main())
