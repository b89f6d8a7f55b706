"""`python -m dr.replace_member`: the entry point; the command is ``dr.commands.replace_member``."""

import sys

from dr.commands.replace_member import main

if __name__ == "__main__":
    sys.exit(main())
