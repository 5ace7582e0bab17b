"""The path matrix: every combination that selects a different internal path.

A :class:`Path` is one row: a backend, the kind of the handlers, the stream
the client connects over, and two options that take a connection off the
inline fast path when the suite was written (``on_flushed`` registered,
``idle_timeout`` set; see ``tcpkit._driver``'s module docstring).
Adding a path is adding one value to a dimension below, nothing else.

Checks are written once, as ``async def test_x(path, h)``, and decorated
with :func:`matrix` (every row, or the rows a predicate keeps) or
:func:`per_backend` (one row per backend). The conftest turns that into
parameters: by default a covering subset (:func:`covering`: every pair of
values of the non-backend dimensions appears in some row, crossed with every
backend), the rest of the full product under ``@pytest.mark.slow``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar

Backend = Literal["asyncio", "uvloop", "trio"]
HandlerKind = Literal["def", "async", "awaits"]
StreamKind = Literal["tcp", "tls", "unix", "memory"]

BACKENDS: tuple[Backend, ...] = ("asyncio", "uvloop", "trio")
HANDLER_KINDS: tuple[HandlerKind, ...] = ("def", "async", "awaits")
"""``def``; ``async def`` that returns without waiting; ``async def`` that waits first."""
STREAMS: tuple[StreamKind, ...] = ("tcp", "tls", "unix", "memory")
"""TCP on 127.0.0.1, TLS over it, a Unix socket, the in-memory ``TestServer``."""


@dataclass(frozen=True)
class Path:
    """One row of the matrix."""

    backend: Backend
    handler: HandlerKind
    stream: StreamKind
    flushed: bool
    """An ``on_flushed`` handler is registered."""
    idle: bool
    """``idle_timeout`` is set (large enough never to fire)."""

    @property
    def id(self) -> str:
        options = "".join(f"+{name}" for name in ("flushed", "idle") if getattr(self, name))
        return f"{self.backend}-{self.handler}-{self.stream}{options}"

    @property
    def anyio_backend(self) -> tuple[str, dict[str, Any]]:
        """The value of the ``anyio_backend`` fixture that runs this row."""
        if self.backend == "uvloop":
            return ("asyncio", {"use_uvloop": True})
        return (self.backend, {})

    @property
    def is_async(self) -> bool:
        return self.handler != "def"

    @property
    def socket(self) -> bool:
        """A real socket (not the in-memory transport)."""
        return self.stream != "memory"

    @property
    def parks(self) -> bool:
        """Whether a connection waits for input without a task of its own.

        ``def`` handlers over tcpkit's own socket streams (``Transport.parkable``;
        see ``tcpkit._driver.Driver.start``).
        """
        return self.handler == "def" and self.stream in ("tcp", "unix")

    @property
    def inline(self) -> bool:
        """Whether input is handled in the stream's callback (the inline fast path).

        Mirrors ``Connection._can_inline`` plus the streams that support it
        (tcpkit's own socket streams: not TLS, not the in-memory one).
        """
        return (
            self.handler == "def"
            and not self.flushed
            and not self.idle
            and self.stream in ("tcp", "unix")
        )


DIMENSIONS: dict[str, tuple[Any, ...]] = {
    "backend": BACKENDS,
    "handler": HANDLER_KINDS,
    "stream": STREAMS,
    "flushed": (False, True),
    "idle": (False, True),
}
"""Every dimension and its values, in the order of :class:`Path`'s fields."""

assert list(DIMENSIONS) == [f.name for f in fields(Path)]

PAIRED = tuple(name for name in DIMENSIONS if name != "backend")
"""The dimensions the covering subset pairs (each backend gets the whole subset)."""


def full_product() -> list[Path]:
    """Every row, in a fixed order."""
    return [Path(*values) for values in itertools.product(*DIMENSIONS.values())]


def _pairs(row: Path) -> set[tuple[tuple[str, Any], tuple[str, Any]]]:
    values = [(name, getattr(row, name)) for name in PAIRED]
    return set(itertools.combinations(values, 2))


def covering(rows: Sequence[Path]) -> list[Path]:
    """A subset of ``rows`` in which every pair of values that ``rows`` holds appears.

    Pairs are of the non-backend dimensions (:data:`PAIRED`), covered for each
    backend separately, so the subset is a pairwise covering array crossed
    with the backends. Greedy and deterministic: the row that covers the most
    pairs not yet covered is taken next (ties: the first in order).
    """
    chosen: set[Path] = set()
    for backend in BACKENDS:
        candidates = [r for r in rows if r.backend == backend]
        uncovered = set().union(*(_pairs(r) for r in candidates))
        while uncovered:
            best = max(candidates, key=lambda r: len(_pairs(r) & uncovered))
            chosen.add(best)
            uncovered -= _pairs(best)
    return [r for r in rows if r in chosen]


# -- how checks choose their rows -------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Rows:
    """The rows a check runs on, and the ones it runs on by default."""

    all: tuple[Path, ...]
    default: frozenset[Path]


def matrix(applies: Callable[[Path], bool] | None = None) -> Callable[[F], F]:
    """Run the decorated check on every row (that ``applies`` keeps).

    By default only on :func:`covering` of those rows; the others are ``slow``.
    """

    def decorate(func: F) -> F:
        rows = [r for r in full_product() if applies is None or applies(r)]
        func.path_rows = Rows(tuple(rows), frozenset(covering(rows)))  # type: ignore[attr-defined]
        return func

    return decorate


def per_backend(stream: StreamKind = "tcp", handler: HandlerKind = "async") -> Callable[[F], F]:
    """Run the decorated check once per backend, over ``stream`` (no other dimension)."""

    def decorate(func: F) -> F:
        rows = [Path(b, handler, stream, False, False) for b in BACKENDS]
        func.path_rows = Rows(tuple(rows), frozenset(rows))  # type: ignore[attr-defined]
        return func

    return decorate


def rows_of(func: Callable[..., Any]) -> Rows | None:
    return getattr(func, "path_rows", None)


def describe(rows: Iterable[Path]) -> str:
    return ", ".join(r.id for r in rows)
