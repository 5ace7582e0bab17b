r"""A server that serves at most two clients at a time (POE's Concurrency).

``App(max_connections=2)``: while two clients are connected, the server stops
calling ``accept``, so a third client's connection waits in the kernel's
backlog (its connect succeeds, but it hears nothing) until one of the two
leaves. Nobody is accepted and then turned away.

Each client can change the limit at run time with line commands, which call
``conn.server.set_max_connections(...)`` (POE's ``set_concurrency``):

- ``status``: the connection count, the limit and the server's counters;
- ``close``: stop accepting new clients (limit 0; connected clients stay);
- ``open [N]``: accept again, up to N clients (2 if N is left out);
- ``unlimited``: no limit at all;
- ``quit``: leave.

Try it, in three terminals::

    tcpkit run examples/limited.py:app --port 12345
    nc 127.0.0.1 12345     # "hello, client 1 of at most 2"
    nc 127.0.0.1 12345     # "hello, client 2 of at most 2"
    nc 127.0.0.1 12345     # silent until one of the others types "quit"
"""

from __future__ import annotations

from tcpkit import App, Connection

LIMIT = 2

app = App(name="limited", max_connections=LIMIT)


def describe(limit: int | None) -> str:
    return "unlimited" if limit is None else f"at most {limit}"


@app.on_connect
def hello(conn: Connection[str, str]) -> None:
    server = conn.server
    conn.put(f"hello, client {len(server.connections)} of {describe(server.max_connections)}")


@app.on_input
def command(conn: Connection[str, str], line: str) -> None:
    server = conn.server
    words = line.split()
    verb = words[0].lower() if words else ""
    if verb == "status":
        stats = server.stats
        conn.put(
            f"connections {server.connection_count}, limit {describe(server.max_connections)}, "
            f"accepted {stats.total} in all"
        )
    elif verb == "close":
        server.set_max_connections(0)
        conn.put("closed: no new clients until 'open'")
    elif verb == "open":
        if len(words) > 2 or (len(words) == 2 and not words[1].isdigit()):
            conn.put("usage: open [N]")
            return
        limit = int(words[1]) if len(words) == 2 else LIMIT
        server.set_max_connections(limit)
        conn.put(f"open: {describe(limit)} clients")
    elif verb == "unlimited":
        server.set_max_connections(None)
        conn.put("open: unlimited clients")
    elif verb == "quit":
        conn.put("bye")
        conn.shutdown()
    else:
        conn.put("commands: status, close, open [N], unlimited, quit")


if __name__ == "__main__":
    app.run(port=12345)
