"""`python -m dr.prune`: the entry point; the command is ``dr.commands.prune``."""

import sys

from dr.commands.prune import main

if __name__ == "__main__":
    sys.exit(main())
