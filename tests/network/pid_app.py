"""A line server that answers every line with the serving process's pid (for --workers tests)."""

from __future__ import annotations

import os

from tcpkit import App, Connection

app = App(name="pid")


@app.on_input
def answer(conn: Connection[str, str], line: str) -> None:
    conn.put(f"{os.getpid()} {line}")
