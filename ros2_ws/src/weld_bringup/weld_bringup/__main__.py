"""``python -m weld_bringup``: the runner (see weld_bringup.runner)."""

import sys

from weld_bringup.runner import main

sys.exit(main())
