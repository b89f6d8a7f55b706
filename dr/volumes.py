"""`python -m dr.volumes`: the entry point; the command is ``dr.commands.volumes``."""

import sys

from dr.commands.volumes import main

if __name__ == "__main__":
    sys.exit(main())
