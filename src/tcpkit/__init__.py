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

The names below load on first use (PEP 562), so that importing a submodule
such as ``tcpkit.pytest_plugin`` does not import the whole package.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
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
        ConnectionTimeout,
        EncodeError,
        FrameError,
        FrameTooLarge,
        IdleTimeout,
        IncompleteFrame,
        MalformedFrame,
        MessageTimeout,
        ProxyProtocolError,
        RegistrationError,
        SendTimeout,
        ServerError,
        SetupTimeout,
        TcpkitError,
        UntrustedProxyPeer,
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
    "ConnectionTimeout",
    "Decoder",
    "EncodeError",
    "Encoder",
    "Filter",
    "FixedBlocks",
    "FrameError",
    "FrameTooLarge",
    "Handlers",
    "IdleTimeout",
    "IncompleteFrame",
    "Json",
    "Layer",
    "LengthPrefixed",
    "Lines",
    "MalformedFrame",
    "Map",
    "MessageTimeout",
    "Netstrings",
    "Observer",
    "ProxyProtocolError",
    "Raw",
    "Reconnect",
    "RegistrationError",
    "SendTimeout",
    "Server",
    "ServerError",
    "ServerStats",
    "Settings",
    "SetupTimeout",
    "TcpkitError",
    "UntrustedProxyPeer",
    "WriteBuffer",
    "WriteBufferFull",
    "__version__",
    "connect",
]


# Where each public name lives: imported from there on first access.
_LAZY = {
    "App": "app",
    "Channel": "client",
    "Codec": "codecs",
    "Connection": "connection",
    "ConnectionClosed": "exceptions",
    "Decoder": "codecs",
    "EncodeError": "exceptions",
    "Encoder": "codecs",
    "Filter": "codecs",
    "FixedBlocks": "codecs",
    "FrameError": "exceptions",
    "FrameTooLarge": "exceptions",
    "Handlers": "settings",
    "IncompleteFrame": "exceptions",
    "Json": "codecs",
    "Layer": "codecs",
    "LengthPrefixed": "codecs",
    "Lines": "codecs",
    "MalformedFrame": "exceptions",
    "Map": "codecs",
    "Netstrings": "codecs",
    "Observer": "observer",
    "ProxyProtocolError": "exceptions",
    "Raw": "codecs",
    "Reconnect": "client",
    "RegistrationError": "exceptions",
    "Server": "server",
    "ServerError": "exceptions",
    "ServerStats": "stats",
    "SetupTimeout": "exceptions",
    "ConnectionTimeout": "exceptions",
    "IdleTimeout": "exceptions",
    "MessageTimeout": "exceptions",
    "SendTimeout": "exceptions",
    "Settings": "settings",
    "TcpkitError": "exceptions",
    "UntrustedProxyPeer": "exceptions",
    "WriteBuffer": "settings",
    "WriteBufferFull": "exceptions",
    "connect": "client",
}


if not _typing.TYPE_CHECKING:  # type checkers see the imports above, and no catch-all

    def __getattr__(name: str) -> object:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(_importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # the next access is a plain module attribute
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
