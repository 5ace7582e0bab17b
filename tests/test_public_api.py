"""The public surface is pinned: ``__all__`` matches what the package really exports."""

from __future__ import annotations

import tcpkit
import tcpkit.codecs


def test_all_names_exist_and_are_unique() -> None:
    for module in (tcpkit, tcpkit.codecs):
        assert len(module.__all__) == len(set(module.__all__))
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name} is in __all__ but missing"


def test_public_names_are_all_listed() -> None:
    public = {
        name
        for name, value in vars(tcpkit).items()
        if not name.startswith("_") and not isinstance(value, type(tcpkit))
    }
    assert public <= set(tcpkit.__all__), public - set(tcpkit.__all__)


def test_core_names_are_pinned() -> None:
    expected = {
        "App",
        "Codec",
        "Connection",
        "ConnectionClosed",
        "Decoder",
        "EncodeError",
        "Encoder",
        "FrameError",
        "FrameTooLarge",
        "IncompleteFrame",
        "Layer",
        "Lines",
        "MalformedFrame",
        "Raw",
        "RegistrationError",
        "Server",
        "ServerError",
        "TcpkitError",
        "WriteBufferFull",
    }
    assert expected <= set(tcpkit.__all__)


def test_exception_tree() -> None:
    assert issubclass(tcpkit.FrameTooLarge, tcpkit.FrameError)
    assert issubclass(tcpkit.MalformedFrame, tcpkit.FrameError)
    assert issubclass(tcpkit.IncompleteFrame, tcpkit.FrameError)
    for exc in (tcpkit.FrameError, tcpkit.EncodeError, tcpkit.ConnectionClosed, tcpkit.ServerError):
        assert issubclass(exc, tcpkit.TcpkitError)
    assert not issubclass(tcpkit.EncodeError, tcpkit.FrameError)
