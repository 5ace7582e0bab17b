"""Typed, sans-IO codecs (POE filters). Nothing here does I/O.

Framings (bytes on the wire to messages): :class:`Lines`, :class:`Raw`,
:class:`FixedBlocks`, :class:`LengthPrefixed`, :class:`Netstrings`. Layers
(messages to messages, stacked with ``|``): :class:`Json`, :class:`Map`,
:class:`Filter`.
"""

from .base import (
    NEED_DATA,
    Codec,
    CodecSpec,
    Decoder,
    Encoder,
    Layer,
    NeedData,
    Stacked,
    resolve_codec,
)
from .filter import Filter
from .fixed import FixedBlocks
from .json import Json
from .length import LengthPrefixed
from .lines import Lines
from .map import Map
from .netstrings import Netstrings
from .raw import Raw

__all__ = [
    "NEED_DATA",
    "Codec",
    "CodecSpec",
    "Decoder",
    "Encoder",
    "Filter",
    "FixedBlocks",
    "Json",
    "Layer",
    "LengthPrefixed",
    "Lines",
    "Map",
    "NeedData",
    "Netstrings",
    "Raw",
    "Stacked",
    "resolve_codec",
]
