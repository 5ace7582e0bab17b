"""Typed, sans-IO codecs (POE filters). Nothing here does I/O."""

from .base import NEED_DATA, Codec, CodecSpec, Decoder, Encoder, Layer, NeedData, resolve_codec
from .lines import Lines
from .raw import Raw

__all__ = [
    "NEED_DATA",
    "Codec",
    "CodecSpec",
    "Decoder",
    "Encoder",
    "Layer",
    "Lines",
    "NeedData",
    "Raw",
    "resolve_codec",
]
