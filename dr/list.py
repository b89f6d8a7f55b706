"""`python -m dr.list`: the entry point; the command is ``dr.commands.list``."""

import sys

from dr.commands.list import main

if __name__ == "__main__":
    sys.exit(main())
