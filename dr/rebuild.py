"""`python -m dr.rebuild`: the entry point; the command is ``dr.commands.rebuild``."""

import sys

from dr.commands.rebuild import main

if __name__ == "__main__":
    sys.exit(main())
