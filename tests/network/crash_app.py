"""Apps that fail inside ``--workers`` workers (the supervisor itself imports them fine).

* ``app`` dies (``os._exit(1)``) on its first connection, after the worker
  reported that it serves: the supervisor must restart it with a growing
  delay, never in a tight loop.
* With ``TCPKIT_TEST_BOOT_FAIL=1`` importing this module raises inside a worker
  process only: the supervisor must give up and exit 1 with that error.
* ``early`` dies in ``on_started``, before its worker serves: the same.
"""

from __future__ import annotations

import os
import sys

from tcpkit import App, Connection, Server
from tcpkit.workers import WORKER_COMMAND

if os.environ.get("TCPKIT_TEST_BOOT_FAIL") and sys.argv[1:2] == [WORKER_COMMAND]:
    raise RuntimeError("this app cannot be loaded in a worker")

app = App(name="crash")


@app.on_connect
def crash(conn: Connection[str, str]) -> None:
    os._exit(1)


early = App(name="early")


@early.on_started
def crash_early(server: Server[str, str]) -> None:
    if sys.argv[1:2] == [WORKER_COMMAND]:
        os._exit(1)
