r"""A chat server: every line you type goes to everyone else.

Each client gets a nickname (``guest1``, ``guest2``...) and these commands:

- ``/nick NAME``: change your nickname (letters, digits, ``_`` and ``-``;
  at most 20 characters; not in use by someone else);
- ``/who``: list who is connected;
- ``/msg NAME TEXT``: say something to one person only;
- ``/quit``: leave (the server says goodbye, then closes the connection).

Broadcasts use ``conn.server.broadcast(..., exclude=conn)``. ``/msg`` posts a
custom event to the recipient's connection (``server.post`` and
``@app.on_event``), so the message is delivered in the recipient's own turn.

Try it, in two or more terminals::

    tcpkit run examples/chat.py:app --port 12345
    socat - TCP:127.0.0.1:12345
    nc 127.0.0.1 12345
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tcpkit import App, Connection

NICK = re.compile(r"[A-Za-z0-9_-]{1,20}")


@dataclass
class Chatter:
    """Per-connection state (``conn.state``)."""

    nick: str = ""


app = App(name="chat", state=Chatter)


def nick_of(conn: Connection[str, str]) -> str:
    chatter: Chatter = conn.state
    return chatter.nick


def find(conn: Connection[str, str], nick: str) -> Connection[str, str] | None:
    """The live connection whose nickname is ``nick`` (case-insensitive)."""
    wanted = nick.casefold()
    for other in conn.server.connections:
        if nick_of(other).casefold() == wanted:
            return other
    return None


@app.on_connect
def joined(conn: Connection[str, str]) -> None:
    conn.state.nick = f"guest{conn.id}"
    conn.put(f"* Welcome, {nick_of(conn)}! Commands: /nick NAME, /who, /msg NAME TEXT, /quit")
    conn.server.broadcast(f"* {nick_of(conn)} joined", exclude=conn)


@app.on_input
def said(conn: Connection[str, str], line: str) -> None:
    if not line.startswith("/"):
        if line.strip():
            conn.server.broadcast(f"<{nick_of(conn)}> {line}", exclude=conn)
        return
    command, _, rest = line[1:].partition(" ")
    command, rest = command.lower(), rest.strip()
    if command == "nick":
        rename(conn, rest)
    elif command == "who":
        nicks = sorted(nick_of(other) for other in conn.server.connections)
        conn.put(f"* {len(nicks)} connected: {', '.join(nicks)}")
    elif command == "msg":
        nick, _, text = rest.partition(" ")
        target = find(conn, nick) if nick else None
        if target is None or not text:
            conn.put("* usage: /msg NAME TEXT (NAME must be connected; see /who)")
        else:
            conn.server.post(target.id, "private", nick_of(conn), text)
    elif command == "quit":
        conn.put("* Bye!")
        conn.shutdown()  # graceful: "* Bye!" is delivered before the socket closes
    else:
        conn.put(f"* unknown command /{command}; try /nick, /who, /msg or /quit")


def rename(conn: Connection[str, str], nick: str) -> None:
    old = nick_of(conn)
    if not NICK.fullmatch(nick):
        conn.put("* a nickname is 1 to 20 letters, digits, '_' or '-'")
        return
    other = find(conn, nick)
    if other is not None and other is not conn:
        conn.put(f"* {nick} is already taken")
        return
    conn.state.nick = nick
    conn.put(f"* you are now {nick}")
    conn.server.broadcast(f"* {old} is now {nick}", exclude=conn)


@app.on_event("private")
def private(conn: Connection[str, str], sender: str, text: str) -> None:
    conn.put(f"*{sender}* {text}")


@app.on_disconnect
def left(conn: Connection[str, str]) -> None:
    conn.server.broadcast(f"* {nick_of(conn)} left", exclude=conn)


if __name__ == "__main__":
    app.run(port=12345)
