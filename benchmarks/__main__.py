"""``python -m benchmarks``: tcpkit against raw servers on every backend (see runner.py)."""

import sys

from .runner import main

sys.exit(main())
