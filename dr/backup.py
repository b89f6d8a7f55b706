"""`python -m dr.backup`: the entry point; the command is ``dr.commands.backup``."""

import sys

from dr.commands.backup import main
from dr.commands.cli import sigterm_as_interrupt

if __name__ == "__main__":
    sigterm_as_interrupt()
    sys.exit(main())
