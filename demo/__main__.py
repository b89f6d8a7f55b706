import sys

from demo.run import main
from dr.commands.verify import sigterm_as_interrupt

# The sandbox's processes run detached: a SIGTERM (`timeout`, a cancelled CI job) must still reach the teardown.
sigterm_as_interrupt()
sys.exit(main())
