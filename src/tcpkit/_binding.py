"""Creating listening sockets: TCP on one port across addresses, dual stack, Unix sockets.

Plain, synchronous socket code shared by :meth:`tcpkit.Server._bind` (which
wraps the sockets for the event loop) and the ``--workers`` supervisor (which
binds before any worker starts, so that every worker serves the same sockets).
Binding a socket never blocks; only name resolution may, and the server does
that on its event loop before calling in here.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import stat
from collections.abc import Sequence
from typing import Any

__all__ = [
    "BindError",
    "Target",
    "bind_all_interfaces",
    "bind_tcp",
    "bind_unix",
    "describe",
    "describe_sockets",
    "open_sockets",
    "resolve",
    "resolve_args",
    "targets",
    "unix_socket_in_use",
]

Target = tuple[socket.AddressFamily, str, tuple[Any, ...]]
"""A resolved address to bind: ``(family, printable host, sockaddr without the port)``."""

_PORT_ATTEMPTS = 20  # port 0 on several addresses: how often to retry a clash


class BindError(OSError):
    """Binding one address failed; :attr:`where` names it (``"[::1]:8000"``, ``"unix:/run/x"``).

    ``str(exc)`` is the one-line message ``cannot listen on WHERE: REASON``.
    """

    def __init__(self, where: str, cause: OSError) -> None:
        reason = cause.strerror or str(cause)
        if isinstance(cause, socket.gaierror):
            reason = f"cannot resolve the host name ({reason})"
        elif reason == os.strerror(errno.EADDRINUSE):
            reason = "address already in use"
        super().__init__(cause.errno, reason)
        self.where = where
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot listen on {self.where}: {self.reason}"


def describe(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve_args(host: str) -> tuple[str, int]:
    """The ``getaddrinfo`` host and flags to bind ``host`` (an address or a name).

    ``[::1]`` loses its brackets. Numeric addresses are not looked up
    (``AI_NUMERICHOST``); names get ``AI_ADDRCONFIG`` so that a machine without
    IPv6 is not asked to bind an IPv6 address.
    """
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(name.partition("%")[0])
    except ValueError:
        return name, socket.AI_PASSIVE | socket.AI_ADDRCONFIG
    return name, socket.AI_PASSIVE | socket.AI_NUMERICHOST


def resolve(host: str) -> list[Target]:
    """Resolve ``host`` (an address or a name) to the addresses to bind. May block.

    Raises:
        BindError: the name cannot be resolved, or has no IPv4/IPv6 address.
    """
    name, flags = resolve_args(host)
    try:
        infos = socket.getaddrinfo(name, 0, type=socket.SOCK_STREAM, flags=flags)
    except OSError as exc:
        raise BindError(repr(host), exc) from exc
    found = targets(infos)
    if not found:
        raise BindError(repr(host), OSError(errno.EADDRNOTAVAIL, "no IPv4 or IPv6 address"))
    return found


def targets(infos: Sequence[tuple[Any, ...]]) -> list[Target]:
    """Turn ``getaddrinfo`` results into bind targets, in order, without duplicates."""
    out: list[Target] = []
    seen: set[tuple[Any, ...]] = set()
    for info in infos:
        family, kind, sockaddr = info[0], info[1], info[4]
        if kind != socket.SOCK_STREAM or family not in (socket.AF_INET, socket.AF_INET6):
            continue
        key = (family, sockaddr[0], *sockaddr[2:])
        if key in seen:
            continue
        seen.add(key)
        out.append((socket.AddressFamily(family), str(sockaddr[0]), tuple(sockaddr)))
    return out


def _tcp_socket(
    family: socket.AddressFamily,
    sockaddr: tuple[Any, ...],
    *,
    v6only: bool,
    reuse_port: bool,
    backlog: int,
) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            option = getattr(socket, "SO_REUSEPORT", None)
            if option is None:
                raise OSError(errno.ENOPROTOOPT, "reuse_port is not supported on this platform")
            sock.setsockopt(socket.SOL_SOCKET, option, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_tcp(
    addresses: Sequence[Target], port: int, *, reuse_port: bool = False, backlog: int = 1024
) -> list[socket.socket]:
    """Bind and listen on every address, all on the same port.

    With ``port=0`` the first address gets a port from the OS and the others
    are bound to that same port; when it is already taken on one of them, all
    are closed and another port is tried (a bounded number of times).

    Raises:
        BindError: an address could not be bound (nothing stays bound).
        ValueError: ``port`` is not in 0..65535, or there are no addresses.
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535, got {port}")
    if not addresses:
        raise ValueError("no address to bind")
    last: BindError | None = None
    for _ in range(_PORT_ATTEMPTS if port == 0 and len(addresses) > 1 else 1):
        try:
            return _bind_same_port(addresses, port, reuse_port=reuse_port, backlog=backlog)
        except _PortTaken as exc:
            last = exc.error  # the OS-picked port is taken on another address: again
    assert last is not None
    raise last


class _PortTaken(Exception):
    """The port the OS picked for the first address is taken on a later one."""

    def __init__(self, error: BindError) -> None:
        super().__init__(str(error))
        self.error = error


def _bind_same_port(
    addresses: Sequence[Target], port: int, *, reuse_port: bool, backlog: int
) -> list[socket.socket]:
    """Bind every address on ``port`` (with 0: on the port the OS gives the first one).

    Raises:
        BindError: an address could not be bound (nothing stays bound).
        _PortTaken: with ``port=0``, the first address's port is in use on a later
            one (nothing stays bound).
    """
    socks: list[socket.socket] = []
    chosen = port
    try:
        for family, host, sockaddr in addresses:
            try:
                sock = _tcp_socket(
                    family,
                    (sockaddr[0], chosen, *sockaddr[2:]),
                    v6only=True,
                    reuse_port=reuse_port,
                    backlog=backlog,
                )
            except OSError as exc:
                raise BindError(describe(host, chosen), exc) from exc
            socks.append(sock)
            chosen = int(sock.getsockname()[1])
    except BindError as exc:
        for sock in socks:
            sock.close()
        if port == 0 and socks and exc.errno == errno.EADDRINUSE:
            raise _PortTaken(exc) from None
        raise
    return socks


def bind_all_interfaces(
    port: int, *, reuse_port: bool = False, backlog: int = 1024
) -> list[socket.socket]:
    """Bind every interface, IPv4 and IPv6: one dual-stack ``[::]`` socket if possible.

    Falls back to ``0.0.0.0`` alone where IPv6 is missing or disabled.

    Raises:
        BindError: the port could not be bound.
        ValueError: ``port`` is not in 0..65535.
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535, got {port}")
    if socket.has_ipv6 and socket.has_dualstack_ipv6():
        try:
            return [
                _tcp_socket(
                    socket.AF_INET6,
                    ("::", port, 0, 0),
                    v6only=False,
                    reuse_port=reuse_port,
                    backlog=backlog,
                )
            ]
        except OSError as exc:
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT):
                raise BindError(describe("::", port), exc) from exc
    try:
        sock = _tcp_socket(
            socket.AF_INET, ("0.0.0.0", port), v6only=True, reuse_port=reuse_port, backlog=backlog
        )
    except OSError as exc:
        raise BindError(describe("0.0.0.0", port), exc) from exc
    return [sock]


def unix_socket_in_use(path: str) -> bool:
    """True if a live server accepts connections on the Unix socket ``path``.

    A socket file left behind by a server that died refuses connections
    (``ECONNREFUSED``): that one is stale, not in use. A full backlog
    (``EAGAIN``) means a live server.

    Raises:
        OSError: the probe failed for another reason (e.g. permission denied).
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.setblocking(False)
        probe.connect(path)
    except (BlockingIOError, InterruptedError):
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    finally:
        probe.close()
    return True


def bind_unix(path: str, *, mode: int | None = None, backlog: int = 1024) -> socket.socket:
    """Bind and listen on the Unix socket ``path``.

    A stale socket file (no server behind it) is replaced. A socket file in
    use by a live server is left alone, and so is any other kind of file.
    ``mode`` (e.g. ``0o660``) is applied to the socket file.

    Raises:
        BindError: the path is in use by a live server (``EADDRINUSE``), exists
            and is not a socket (``EEXIST``), or cannot be bound.
    """
    where = f"unix:{path}"
    abstract = path.startswith("\0")  # Linux abstract sockets have no file
    if not abstract:
        _remove_stale_socket(path, where)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = False
    try:
        sock.setblocking(False)
        sock.bind(path)
        bound = True
        if mode is not None and not abstract:
            os.chmod(path, mode)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if bound and not abstract:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise BindError(where, exc) from exc
    return sock


def _remove_stale_socket(path: str, where: str) -> None:
    """Remove the socket file ``path`` if no server is behind it (nothing if there is none).

    Raises:
        BindError: a live server accepts on it (``EADDRINUSE``), it is not a
            socket (``EEXIST``), or it cannot be examined or removed.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BindError(where, exc) from exc
    if not stat.S_ISSOCK(info.st_mode):
        raise BindError(where, OSError(errno.EEXIST, "the path exists and is not a socket"))
    try:
        in_use = unix_socket_in_use(path)
        if not in_use:
            os.unlink(path)
    except OSError as exc:
        raise BindError(where, exc) from exc
    if in_use:
        raise BindError(where, OSError(errno.EADDRINUSE, "already in use by a running server"))


def open_sockets(
    host: str | Sequence[str] | None,
    port: int | None,
    uds: str | None = None,
    *,
    uds_mode: int | None = None,
    reuse_port: bool = False,
    backlog: int = 1024,
) -> list[socket.socket]:
    """Resolve and bind every listening socket of a server. May block (name resolution).

    ``host`` is an address, a host name (resolved here, once), a list of them,
    or ``None`` for every interface; ``port`` ``None`` means no TCP at all, and
    ``0`` one OS-picked port shared by every address. ``uds`` adds a Unix
    socket (see :func:`bind_unix`).

    Raises:
        BindError: a host could not be resolved or an address could not be
            bound; nothing stays bound.
    """
    socks: list[socket.socket] = []
    try:
        if port is not None:
            if not 0 <= port <= 65535:
                raise BindError(
                    f"port {port}", OSError(errno.EINVAL, "not a valid port (0..65535)")
                )
            if host is None:
                socks += bind_all_interfaces(port, reuse_port=reuse_port, backlog=backlog)
            else:
                hosts = [host] if isinstance(host, str) else list(host)
                if not hosts:
                    raise BindError(
                        f"port {port}",
                        OSError(errno.EINVAL, "no host given (use None for every interface)"),
                    )
                found: list[Target] = []
                for name in hosts:
                    found += [t for t in resolve(name) if t not in found]
                socks += bind_tcp(found, port, reuse_port=reuse_port, backlog=backlog)
        if uds is not None:
            socks.append(bind_unix(uds, mode=uds_mode, backlog=backlog))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def describe_sockets(socks: Sequence[socket.socket]) -> list[str]:
    """``127.0.0.1:8000``, ``[::1]:8000``, ``unix:/run/app.sock``: one per socket."""
    out: list[str] = []
    for sock in socks:
        local: Any = sock.getsockname()
        if isinstance(local, tuple):
            out.append(describe(str(local[0]), int(local[1])))  # pyright: ignore[reportUnknownArgumentType]
        else:
            out.append(f"unix:{os.fsdecode(local)}")
    return out
