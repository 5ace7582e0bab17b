"""Handler plumbing shared by the app, the connection and the server.

A handler may be ``async def`` or a plain ``def``. Which one is decided once,
at registration, so the per-message path pays for a single boolean test and
never for ``inspect`` calls.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["Handler", "call", "handler"]


class Handler(NamedTuple):
    """A registered callable and whether calling it returns an awaitable."""

    func: Callable[..., Any]
    is_async: bool


def _is_async_callable(func: Callable[..., Any]) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    call_method = getattr(func, "__call__", None)  # noqa: B004
    return call_method is not None and inspect.iscoroutinefunction(call_method)


def handler(func: Callable[..., Any]) -> Handler:
    """Wrap ``func`` as a :class:`Handler`.

    Raises:
        TypeError: ``func`` is not callable.
    """
    if not callable(func):
        raise TypeError(f"a handler must be callable, got {func!r}")
    return Handler(func, _is_async_callable(func))


async def call(h: Handler, *args: Any) -> Any:
    """Call a handler with ``args``, awaiting it if it is asynchronous."""
    result = h.func(*args)
    if h.is_async:
        return await result
    if inspect.isawaitable(result):  # a plain def that returned an awaitable
        return await result
    return result
