"""`python -m dr.backup`: the entry point; the command is ``dr.commands.backup``."""

import sys

from dr.commands.backup import main

if __name__ == "__main__":
    sys.exit(main())
