"""`python -m dr.diff`: the entry point; the command is ``dr.commands.diff``."""

import sys

from dr.commands.diff import main
from dr.commands.verify import sigterm_as_interrupt

if __name__ == "__main__":
    sigterm_as_interrupt()  # SIGTERM cleans up like Ctrl-C: the temporary snapshot folder is removed
    sys.exit(main())
