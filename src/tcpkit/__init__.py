"""tcpkit: a microframework for TCP servers.

A server is a handful of decorated callbacks; tcpkit does the listening,
accepting, framing, buffering, error handling and shutdown, on anyio (asyncio,
uvloop or trio)::

    from tcpkit import App

    app = App()

    @app.on_input
    async def echo(conn, line: str) -> None:
        await conn.send(line)

    if __name__ == "__main__":
        app.run(port=12345)
"""

from .app import App
from .client import Channel, Reconnect, connect
from .codecs import (
    Codec,
    Decoder,
    Encoder,
    Filter,
    FixedBlocks,
    Json,
    Layer,
    LengthPrefixed,
    Lines,
    Map,
    Netstrings,
    Raw,
)
from .connection import Connection
from .exceptions import (
    ConnectionClosed,
    EncodeError,
    FrameError,
    FrameTooLarge,
    IncompleteFrame,
    MalformedFrame,
    ProxyProtocolError,
    RegistrationError,
    ServerError,
    SetupTimeout,
    TcpkitError,
    WriteBufferFull,
)
from .observer import Observer
from .server import Server
from .settings import Handlers, Settings, WriteBuffer
from .stats import ServerStats

__version__ = "0.1.0"

__all__ = [
    "App",
    "Channel",
    "Codec",
    "Connection",
    "ConnectionClosed",
    "Decoder",
    "EncodeError",
    "Encoder",
    "Filter",
    "FixedBlocks",
    "FrameError",
    "FrameTooLarge",
    "Handlers",
    "IncompleteFrame",
    "Json",
    "Layer",
    "LengthPrefixed",
    "Lines",
    "MalformedFrame",
    "Map",
    "Netstrings",
    "Observer",
    "ProxyProtocolError",
    "Raw",
    "Reconnect",
    "RegistrationError",
    "Server",
    "ServerError",
    "ServerStats",
    "Settings",
    "SetupTimeout",
    "TcpkitError",
    "WriteBuffer",
    "WriteBufferFull",
    "__version__",
    "connect",
]
