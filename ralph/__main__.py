"""``python -m ralph``: the same entry point as the ``ralph`` script."""

import sys

from .cli import main

sys.exit(main())
