"""A line protocol with uploads: UPLOAD <n> switches input to one n-byte block."""

import hashlib
from typing import Any

from tcpkit import App, Connection, FixedBlocks, Lines

MAX_UPLOAD = 1024 * 1024

app = App(codec=Lines())


@app.on_input
def command(conn: Connection[Any, str], message: str | bytes) -> None:
    if isinstance(message, bytes):  # the block announced by UPLOAD
        digest = hashlib.sha256(message).hexdigest()
        conn.put(f"RECEIVED {len(message)} bytes, sha256 {digest}")
        conn.set_input_codec(Lines())  # back to commands
        return
    verb, _, size = message.partition(" ")
    if verb == "UPLOAD" and size.isdigit() and 0 < int(size) <= MAX_UPLOAD:
        conn.put("READY")
        conn.set_input_codec(FixedBlocks(int(size)))  # next message: the block
    else:
        conn.put(f"ERROR expected UPLOAD <1..{MAX_UPLOAD}>")
