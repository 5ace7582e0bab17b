"""A chat room: every line goes to everyone else (the tutorial's version)."""

from dataclasses import dataclass

from tcpkit import App, Connection


@dataclass
class Chatter:
    nick: str = ""


app = App(name="chat", state=Chatter)  # each connection gets its own Chatter


@app.on_connect
def joined(conn: Connection[str, str]) -> None:
    me: Chatter = conn.state
    me.nick = f"guest{conn.id}"
    conn.put(f"* Welcome, {me.nick}! /nick NAME to rename, /quit to leave.")
    conn.server.broadcast(f"* {me.nick} joined", exclude=conn)


@app.on_input
def said(conn: Connection[str, str], line: str) -> None:
    me: Chatter = conn.state
    if line.startswith("/nick ") and line[6:].strip():
        old, me.nick = me.nick, line[6:].strip()
        conn.server.broadcast(f"* {old} is now {me.nick}")
    elif line == "/quit":
        conn.put("* Bye!")
        conn.shutdown()
    elif line.strip():
        conn.server.broadcast(f"<{me.nick}> {line}", exclude=conn)


@app.on_disconnect
def left(conn: Connection[str, str]) -> None:
    me: Chatter = conn.state
    conn.server.broadcast(f"* {me.nick} left")
