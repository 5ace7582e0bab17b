"""Helpers for the network tests: PROXY header builders, echo apps, polling connects."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tcpkit import App, Connection
from tcpkit.proxy import V2_SIGNATURE


@dataclass
class Certs:
    """A test CA and a server certificate, as contexts and as PEM files (the ``certs`` fixture)."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    certfile: Path
    keyfile: Path
    cafile: Path


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _has_ipv6_loopback()
needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="this machine has no IPv6 loopback (::1)")


# -- PROXY headers, built independently of tcpkit.proxy ---------------------


def proxy_v1(src: str, dst: str, sport: int, dport: int) -> bytes:
    """``PROXY TCP4|TCP6 src dst sport dport\\r\\n``."""
    family = "TCP6" if ipaddress.ip_address(src).version == 6 else "TCP4"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def proxy_v2(
    src: str | None = None,
    dst: str | None = None,
    sport: int = 0,
    dport: int = 0,
    *,
    local: bool = False,
    tlvs: Sequence[tuple[int, bytes]] = (),
    udp: bool = False,
    crc: bool | int | None = None,
) -> bytes:
    """A v2 header: PROXY (or LOCAL) over TCP4/TCP6/UDP, or UNSPEC when ``src`` is None.

    ``crc=True`` appends a ``PP2_TYPE_CRC32C`` TLV with the right checksum, an
    int appends one carrying that value instead.
    """
    command = 0x20 if local else 0x21
    if src is None or dst is None:
        family, addresses = 0x00, b""
    else:
        a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        family = (0x21 if a.version == 6 else 0x11) + (1 if udp else 0)
        addresses = a.packed + b.packed + struct.pack("!HH", sport, dport)
    extensions = b"".join(struct.pack("!BH", kind, len(value)) + value for kind, value in tlvs)
    if crc is not None:
        extensions += struct.pack("!BH", 0x03, 4) + bytes(4)  # the checksum, zeroed for now
    payload = addresses + extensions
    header = V2_SIGNATURE + struct.pack("!BBH", command, family, len(payload)) + payload
    if crc is None:
        return header
    value = crc if crc is not True else bitwise_crc32c(header)
    return header[:-4] + int(value).to_bytes(4, "big")


def bitwise_crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) bit by bit: an implementation independent of tcpkit's table."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


# -- apps --------------------------------------------------------------------


def whoami_app(**options: Any) -> App[str, str]:
    """Answers every line with ``<remote_ip> <remote_port> <line>``."""
    app: App[str, str] = App(**options)

    @app.on_input
    async def answer(conn: Connection[str, str], line: str) -> None:
        await conn.send(f"{conn.remote_ip} {conn.remote_port} {line}")

    return app


# -- waiting for real programs -----------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for external programs' configs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Poll until something accepts on ``host:port``; no fixed sleeps."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing accepted on {host}:{port} in {timeout} s") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
