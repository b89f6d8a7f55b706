"""`python -m dr.status`: the entry point; the command is ``dr.commands.status``."""

import sys

from dr.commands.status import main

if __name__ == "__main__":
    sys.exit(main())
