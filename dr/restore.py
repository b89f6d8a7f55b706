"""`python -m dr.restore`: the entry point; the command is ``dr.commands.restore``."""

import sys

from dr.commands.cli import sigterm_as_interrupt
from dr.commands.restore import main

if __name__ == "__main__":
    sigterm_as_interrupt()
    sys.exit(main())
