"""``python -m tipkit``: the command-line interface."""

import sys

from tipkit._cli import main

sys.exit(main())
