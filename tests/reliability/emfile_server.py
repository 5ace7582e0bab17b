"""A server for the EMFILE test: run with a tiny RLIMIT_NOFILE, prints its port."""

from __future__ import annotations

import resource
import sys

from tcpkit import App, Connection

limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

app = App()


@app.on_input
def echo(conn: Connection[str, str], line: str) -> None:
    conn.put(line)


if __name__ == "__main__":
    backend = sys.argv[1]
    options = {"use_uvloop": True} if backend == "uvloop" else {}
    app.run(
        port=int(sys.argv[3]),
        backend="trio" if backend == "trio" else "asyncio",
        backend_options=options,
    )
