"""Helpers to test tcpkit apps and codecs.

:func:`check_codec` needs hypothesis (``pip install hypothesis``). It is
imported on first use, so ``import tcpkit.testing`` works without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._codecs import check_codec

__all__ = ["check_codec"]


def __getattr__(name: str) -> Any:
    if name == "check_codec":
        from ._codecs import check_codec

        return check_codec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
