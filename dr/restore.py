"""`python -m dr.restore`: the entry point; the command is ``dr.commands.restore``."""

import sys

from dr.commands.restore import main

if __name__ == "__main__":
    sys.exit(main())
