"""A cheap way to start a task per connection, on every backend.

Starting a task through an anyio task group costs about 25-30 µs on this
generation of anyio (each task gets a handle, a cancel scope and an event),
three to four times what the backend itself charges, and a server starts one
task per connection. :func:`open_task_pool` gives the server a pool that
starts tasks natively, under the same rules as a task group:

* on trio, it is a trio nursery (``start_soon``, cancellation and errors are
  trio's own; a lone error leaves it unwrapped, as the enclosing task group
  wraps it anyway);
* on asyncio (and uvloop), tasks are ``loop.create_task`` tasks the pool keeps
  track of. Leaving the pool waits for all of them; leaving it with an
  exception (or being cancelled while waiting) cancels them first. A task that
  fails is re-raised in the enclosing anyio task group, which cancels the
  group as any failing child would.

The pool also makes the cancel scopes of those tasks (``cancel_scope``): on
trio, trio's own, which anyio's wraps (anyio's costs about 20,000 more
instructions to make, enter and leave; a connection's task has one); on
asyncio, anyio's, as asyncio has none.

The server's connection tasks catch their own errors; a failure here is a bug
or a ``KeyboardInterrupt``-like exception, and must not go unseen.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.abc
from typing_extensions import TypeVarTuple, Unpack

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    import trio

__all__ = ["CancelScope", "TaskPool", "known_async_library", "open_task_pool"]

Args = TypeVarTuple("Args")


class CancelScope(Protocol):
    """What tcpkit needs of a cancel scope: anyio's, or trio's own."""

    @property
    def cancelled_caught(self) -> bool:
        """Whether the scope caught the cancellation it caused (once it has been left)."""
        ...

    def cancel(self) -> None:
        """Cancel what runs in the scope (now, or as soon as it is entered)."""
        ...

    def __enter__(self) -> object: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> bool: ...


class TaskPool(Protocol):
    """Starts tasks that the pool's ``async with`` waits for."""

    def start_soon(
        self, async_fn: Callable[[Unpack[Args]], Awaitable[object]], *args: Unpack[Args]
    ) -> None:
        """Start ``async_fn(*args)`` as a new task (never blocks)."""
        ...

    def cancel_scope(self) -> CancelScope:
        """A new cancel scope for code that runs in this pool's tasks."""
        ...


async def _reraise(exc: BaseException) -> None:
    raise exc


class _AsyncioTaskPool:
    """Native asyncio tasks, waited for and cancelled like a task group's children."""

    def __init__(self, group: anyio.abc.TaskGroup) -> None:
        self._group = group
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle: asyncio.Future[None] | None = None

    def start_soon(
        self, async_fn: Callable[[Unpack[Args]], Awaitable[object]], *args: Unpack[Args]
    ) -> None:
        task: asyncio.Task[Any] = self._loop.create_task(async_fn(*args))  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def cancel_scope(self) -> CancelScope:
        return anyio.CancelScope()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                self.cancel()
                self._group.start_soon(_reraise, exc)  # the group cancels itself and raises
        idle = self._idle
        if idle is not None and not self._tasks and not idle.done():
            idle.set_result(None)

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def wait(self) -> None:
        """Wait for every task; if cancelled meanwhile, cancel them, wait, then re-raise."""
        cancelled: BaseException | None = None
        while self._tasks:
            idle = self._idle = self._loop.create_future()
            try:
                with anyio.CancelScope(shield=cancelled is not None):
                    await idle
            except anyio.get_cancelled_exc_class() as exc:
                cancelled = exc  # (only once: the wait is shielded from then on)
                self.cancel()
            finally:
                self._idle = None
        if cancelled is not None:
            raise cancelled


class _TrioTaskPool:
    """A trio nursery, with trio's own cancel scopes."""

    __slots__ = ("_nursery", "_scope")

    def __init__(self, nursery: trio.Nursery) -> None:
        import trio

        self._nursery = nursery
        self._scope = trio.CancelScope

    def start_soon(
        self, async_fn: Callable[[Unpack[Args]], Awaitable[object]], *args: Unpack[Args]
    ) -> None:
        self._nursery.start_soon(async_fn, *args)

    def cancel_scope(self) -> CancelScope:
        return self._scope()


@asynccontextmanager
async def open_task_pool(group: anyio.abc.TaskGroup) -> AsyncGenerator[TaskPool, None]:
    """A :class:`TaskPool` for the running backend, inside the anyio task group ``group``."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        import trio

        try:
            async with trio.open_nursery() as nursery:
                yield _TrioTaskPool(nursery)
        except BaseExceptionGroup as errors:  # the enclosing task group makes its own
            if len(errors.exceptions) == 1:
                raise errors.exceptions[0] from None
            raise
        return
    pool = _AsyncioTaskPool(group)
    try:
        yield pool
    except BaseException:
        pool.cancel()
        with anyio.CancelScope(shield=True):
            await pool.wait()
        raise
    await pool.wait()


@contextmanager
def known_async_library() -> Generator[None, None, None]:
    """Make the running async library known to code that runs outside any task.

    anyio finds the running library with sniffio, which on asyncio looks for
    the current task; a parked connection's turn runs in an event-loop
    callback, outside any task (``tcpkit._driver``), and its handlers may call
    anyio there (a broadcast starts a helper task). Setting sniffio's context
    variable here, for every task and connection context created inside,
    keeps anyio working there. (``anyio.run`` and trio set it themselves;
    without sniffio, anyio asks asyncio for the running loop, which works.)
    """
    try:
        import sniffio
    except ImportError:  # pragma: no cover - sniffio comes with trio and most installs
        yield
        return
    cvar = sniffio.current_async_library_cvar
    if cvar.get() is not None:
        yield
        return
    token = cvar.set(sniffio.current_async_library())
    try:
        yield
    finally:
        cvar.reset(token)
