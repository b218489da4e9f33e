"""``python -m lenapk.cli``."""

import sys

from . import main

sys.exit(main())
