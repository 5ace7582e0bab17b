"""Decode throughput of every built-in codec, and proof that it scales linearly.

Run ``python -m benchmarks.codec_bench [--quick]`` from the repository root.
Each codec decodes a stream of small messages pushed whole, the same stream
pushed one byte at a time (on a smaller input), and a single large frame pushed
one byte at a time (where a decoder that rescans its buffer goes quadratic).
Each runs at two sizes 10x apart: the "x10 time" column is the ratio of the
two times, about 10 for linear decoding (and about 100 for quadratic).

The table is printed and written to ``benchmarks/CODECS.md`` (``--output``).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tcpkit
from tcpkit.codecs import (
    NEED_DATA,
    Codec,
    FixedBlocks,
    Json,
    LengthPrefixed,
    Lines,
    Netstrings,
    Raw,
)

MESSAGE = b"0123456789abcdef" * 4  # 64 bytes


@dataclass
class Case:
    name: str
    make: Callable[[int], Codec[Any, Any]]  # codec for a largest frame of n bytes
    message: Any  # the small message, or None for no small-message runs
    big: Callable[[int], Any] | None  # one message of about n bytes
    whole: bool = True  # run the whole-buffer mode


CASES = [
    Case("Lines()", lambda n: Lines(max_length=n), MESSAGE.decode(), lambda n: "x" * n),
    Case(
        "Lines(encoding=None)",
        lambda n: Lines(encoding=None, max_length=n),
        MESSAGE,
        lambda n: b"x" * n,
    ),
    Case(
        "Lines(newline='\\r\\n')",
        lambda n: Lines(newline="\r\n", max_length=n),
        MESSAGE.decode(),
        lambda n: "x" * n,
    ),
    # Raw hands pushed bytes back as they are: only byte-at-a-time means anything.
    Case("Raw()", lambda n: Raw(), MESSAGE, None, whole=False),
    Case("FixedBlocks(64)", lambda n: FixedBlocks(64), MESSAGE, None),
    Case("FixedBlocks(n)", lambda n: FixedBlocks(n), None, lambda n: b"x" * n),
    Case("LengthPrefixed()", lambda n: LengthPrefixed(), MESSAGE, lambda n: b"x" * n),
    Case("Netstrings()", lambda n: Netstrings(max_length=n), MESSAGE, lambda n: b"x" * n),
    Case(
        "Lines() | Json()",
        lambda n: Lines(max_length=n + 2) | Json(),
        {"id": 12345, "method": "echo", "params": ["abcdef", 1.5, True]},
        lambda n: "x" * n,
    ),
]


def encode(codec: Codec[Any, Any], messages: list[Any]) -> bytes:
    encoder = codec.encoder()
    return b"".join(encoder.encode(message) for message in messages)


def decode_whole(codec: Codec[Any, Any], data: bytes) -> int:
    decoder = codec.decoder()
    decoder.push(data)
    count = 0
    while decoder.next_message() is not NEED_DATA:
        count += 1
    return count


def decode_bytewise(codec: Codec[Any, Any], data: bytes) -> int:
    decoder = codec.decoder()
    push = decoder.push
    next_message = decoder.next_message
    count = 0
    for i in range(len(data)):
        push(data[i : i + 1])
        while next_message() is not NEED_DATA:
            count += 1
    return count


@dataclass
class Result:
    codec: str
    mode: str
    size: int
    seconds: float
    messages: int

    @property
    def mb_per_s(self) -> float:
        return self.size / self.seconds / 1e6

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds


def timed(
    decode: Callable[[Codec[Any, Any], bytes], int],
    codec: Codec[Any, Any],
    data: bytes,
    repeat: int,
) -> tuple[float, int]:
    count = decode(codec, data)  # warm-up, untimed
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        count = decode(codec, data)
        best = min(best, time.perf_counter() - start)
    return best, count


def run_case(case: Case, sizes: dict[str, int], repeat: int) -> list[tuple[Result, Result]]:
    pairs: list[tuple[Result, Result]] = []
    modes: list[tuple[str, Callable[[Codec[Any, Any], bytes], int], int, bool]] = [
        ("whole", decode_whole, sizes["whole"], False),
        ("bytewise", decode_bytewise, sizes["bytewise"], False),
        ("bytewise, one frame", decode_bytewise, sizes["bytewise"], True),
    ]
    for mode, decode, size, one_frame in modes:
        if (one_frame and case.big is None) or (not one_frame and case.message is None):
            continue
        if mode == "whole" and not case.whole:
            continue
        results: list[Result] = []
        for n in (size, 10 * size):
            codec = case.make(n)
            if one_frame:
                assert case.big is not None
                data = encode(codec, [case.big(n)])
            else:
                one = len(encode(codec, [case.message]))
                data = encode(codec, [case.message] * max(1, n // one))
            seconds, count = timed(decode, codec, data, repeat)
            results.append(Result(case.name, mode, len(data), seconds, count))
        pairs.append((results[0], results[1]))
    return pairs


def human(size: int) -> str:
    if size >= 900 * 1024:
        return f"{size / 1024 / 1024:.1f} MiB"
    return f"{size / 1024:.1f} KiB"


def table(pairs: list[tuple[Result, Result]]) -> str:
    lines = [
        "| codec | mode | size | MB/s | messages/s | size x10: MB/s | x10 time |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for small, large in pairs:
        ratio = large.seconds / small.seconds
        name = small.codec.replace("|", "\\|")  # a pipe would end the table cell
        rate = "-" if small.messages < 2 else f"{small.msgs_per_s:,.0f}"
        lines.append(
            f"| `{name}` | {small.mode} | {human(small.size)} | {small.mb_per_s:,.1f} | "
            f"{rate} | {large.mb_per_s:,.1f} | {ratio:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.codec_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller inputs, one run each")
    parser.add_argument(
        "--output",
        default=str(Path(__file__).with_name("CODECS.md")),
        help="markdown file to write ('-' for none); default benchmarks/CODECS.md",
    )
    args = parser.parse_args(argv)
    if args.quick:
        sizes, repeat = {"whole": 256 * 1024, "bytewise": 16 * 1024}, 1
    else:
        sizes, repeat = {"whole": 1024 * 1024, "bytewise": 64 * 1024}, 3
    pairs: list[tuple[Result, Result]] = []
    for case in CASES:
        pairs += run_case(case, sizes, repeat)
        print(f"  {case.name} done", file=sys.stderr)
    command = "python -m benchmarks.codec_bench" + (" --quick" if args.quick else "")
    report = "\n".join(
        [
            "# Codec decode throughput",
            "",
            f"Produced by `{command}` (tcpkit {tcpkit.__version__}, Python "
            f"{platform.python_version()} on {platform.machine()}, {platform.system()}; "
            f"best of {repeat}).",
            "",
            "*whole*: the stream of 64-byte messages (JSON: a small object) pushed at once. "
            "*bytewise*: the same pushed one byte at a time. *bytewise, one frame*: a single "
            "frame of the given size pushed one byte at a time. *size x10*: the same at ten "
            "times the size; *x10 time* is the ratio of the two times, about 10 when decoding "
            "is linear (100 if it were quadratic).",
            "",
            table(pairs),
            "",
        ]
    )
    print(report)
    if args.output != "-":
        Path(args.output).write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
