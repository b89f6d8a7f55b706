import sys

from dr.restore.command import main

sys.exit(main())
