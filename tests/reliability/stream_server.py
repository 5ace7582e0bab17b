"""A server for the shutdown test: answers each request with ten lines and records,
when each connection ends, how many lines it queued for it."""

from __future__ import annotations

import sys

from tcpkit import App, Connection

RECORD = sys.argv[2]

app = App(name="stream")


@app.on_connect
def hello(conn: Connection[str, str]) -> None:
    conn.state = 1
    conn.put(f"id {conn.id}")


@app.on_input
def answer(conn: Connection[str, str], line: str) -> None:
    for i in range(10):
        conn.put(f"{line} {i} " + "x" * 100)
    conn.state += 10


@app.on_disconnect
def record(conn: Connection[str, str]) -> None:
    with open(RECORD, "a") as f:
        f.write(f"{conn.id} {conn.state}\n")


if __name__ == "__main__":
    backend = sys.argv[1]
    options = {"use_uvloop": True} if backend == "uvloop" else {}
    app.run(
        port=int(sys.argv[3]),
        backend="trio" if backend == "trio" else "asyncio",
        backend_options=options,
        drain_timeout=20,
    )
