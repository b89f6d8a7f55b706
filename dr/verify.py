"""`python -m dr.verify`: the entry point; the command is ``dr.commands.verify``."""

import sys

from dr.commands.verify import main, sigterm_as_interrupt

if __name__ == "__main__":
    sigterm_as_interrupt()
    sys.exit(main())
