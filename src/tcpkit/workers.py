"""``tcpkit run --workers N``: N processes serving the same listening sockets.

The process the command started is the *supervisor*. It binds every listening
socket itself (so ``--port 0`` gives one port that every worker serves), then
starts N *worker* processes (``python -m tcpkit _worker``) that inherit those
sockets and serve them with the app; the kernel spreads new connections over
the workers' ``accept`` calls. The supervisor:

* restarts a worker that dies, after a delay that doubles (0.2 s up to 30 s)
  while workers keep dying young, so a crashing app cannot make it spin;
* on SIGINT or SIGTERM sends SIGTERM to every worker, and each worker closes
  its listeners and drains its connections (bounded by ``--drain-timeout``,
  after which it aborts them); once all workers have exited it exits 0. A
  second signal makes it send SIGQUIT: the workers then abort their
  connections at once. A worker still running ``drain_timeout + 10`` seconds
  after the first signal is killed;
* stops everything and exits 1 if a worker cannot load the app at all.

A worker drains on SIGTERM (more SIGTERMs change nothing, so a signal sent to
the whole process group or cgroup, as systemd does, plus the supervisor's own
is still one graceful stop), aborts on SIGQUIT, ignores SIGINT (a Ctrl-C in a
terminal reaches the whole process group; the supervisor forwards it), and
drains by itself if its supervisor disappears.

Everything a worker needs travels as :class:`WorkerSettings` on its command
line, and the listening sockets as inherited file descriptors.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import signal
import site
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc

from . import _binding
from .app import App
from .exceptions import ServerError
from .importer import import_from_string
from .server import Server
from .settings import Settings

__all__ = ["EXIT_BOOT_FAILED", "WORKER_COMMAND", "WorkerSettings", "supervise", "worker_main"]

WORKER_COMMAND = "_worker"
"""``python -m tcpkit _worker SETTINGS_JSON`` runs one worker (see :func:`worker_main`)."""

logger = logging.getLogger("tcpkit.workers")

EXIT_BOOT_FAILED = 3
"""A worker's exit status when it cannot load the app: the supervisor gives up."""

_RESTART_MIN = 0.2  # seconds before restarting a worker that died
_RESTART_MAX = 30.0
_HEALTHY = 10.0  # a worker that lived this long resets the restart delay
_KILL_MARGIN = 10.0  # seconds past the drain timeout before SIGKILL
_PARENT_POLL = 0.5  # seconds between checks that the supervisor is alive


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker process needs to load and serve the app (sent as JSON)."""

    app: str
    factory: bool = False
    backend: str = "asyncio"
    use_uvloop: bool = False
    max_connections: int | None = None
    proxy_protocol: bool = False
    busy_poll: float | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    drain_timeout: float = 30.0
    log_level: str = "info"
    fds: tuple[int, ...] = ()

    def to_json(self) -> str:
        """The settings as one JSON object."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSettings:
        """Settings from :meth:`to_json`'s output.

        Raises:
            ValueError: ``text`` is not such a JSON object.
        """
        data: Any = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("worker settings must be a JSON object")
        fields = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in fields}  # pyright: ignore[reportUnknownVariableType]
        values["fds"] = tuple(values.get("fds", ()))
        return cls(**values)


# -- the supervisor ----------------------------------------------------------


def supervise(
    settings: WorkerSettings,
    workers: int,
    *,
    host: str | Sequence[str] | None,
    port: int | None,
    uds: str | None = None,
    reuse_port: bool = False,
    backlog: int = 1024,
    announce: Callable[[list[str]], None] | None = None,
) -> int:
    """Bind the listening sockets, run ``workers`` worker processes, return the exit status.

    Blocks until SIGINT/SIGTERM (then 0, once every worker has drained and
    exited) or until a worker cannot load the app (then 1). ``announce`` is
    called with the bound addresses (``"127.0.0.1:8000"``, ``"unix:/run/x"``)
    once the sockets are bound, before any worker starts.

    Raises:
        ValueError: ``workers`` is below 1.
        ServerError: an address could not be resolved or bound, or this is not
            a POSIX system (workers inherit sockets and take POSIX signals).
    """
    if workers < 1:
        raise ValueError("the number of workers must be at least 1")
    if os.name != "posix":
        raise ServerError("--workers needs a POSIX system (Linux, macOS, BSD)")
    try:
        socks = _binding.open_sockets(host, port, uds, reuse_port=reuse_port, backlog=backlog)
    except _binding.BindError as exc:
        raise ServerError(str(exc)) from exc
    uds_inode = os.stat(uds).st_ino if uds is not None and not uds.startswith("\0") else None
    try:
        if announce is not None:
            announce(_binding.describe_sockets(socks))
        fds = tuple(sock.fileno() for sock in socks)
        worker_settings = dataclasses.replace(settings, fds=fds)
        supervisor = _Supervisor(worker_settings, workers)
        return anyio.run(supervisor.run, backend="asyncio")
    finally:
        for sock in socks:
            sock.close()
        if uds is not None and uds_inode is not None:
            _unlink_if_same(uds, uds_inode)


def _unlink_if_same(path: str, inode: int) -> None:
    """Remove our Unix socket file, unless another server has replaced it since."""
    try:
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass


def _worker_command(settings: WorkerSettings) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start one worker.

    The worker must import this same tcpkit: its directory goes on the
    worker's ``PYTHONPATH`` unless it is a site directory (already on the path,
    and never to be put before the standard library).
    """
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    site_dirs = {*site.getsitepackages(), site.getusersitepackages()}
    if package_root not in site_dirs and package_root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([package_root, *paths])
    return [sys.executable, "-m", "tcpkit", WORKER_COMMAND, settings.to_json()], env


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class _Supervisor:
    """Keeps ``workers`` worker processes running until told to stop."""

    def __init__(self, settings: WorkerSettings, workers: int) -> None:
        self._settings = settings
        self._workers = workers
        self._command, self._env = _worker_command(settings)
        self._procs: dict[int, anyio.abc.Process] = {}
        self._stopping = anyio.Event()
        self._failed = False
        self._tg: anyio.abc.TaskGroup | None = None

    async def run(self) -> int:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await tg.start(self._watch_signals)
            async with anyio.create_task_group() as keepers:
                for slot in range(1, self._workers + 1):
                    keepers.start_soon(self._keep, slot)
            tg.cancel_scope.cancel()
        logger.info("all workers stopped")
        return 1 if self._failed else 0

    async def _keep(self, slot: int) -> None:
        """Run worker ``slot``, restarting it with a back-off until stopping."""
        delay = _RESTART_MIN
        while not self._stopping.is_set():
            started = anyio.current_time()
            try:
                proc = await anyio.open_process(
                    self._command,
                    stdin=subprocess.DEVNULL,
                    stdout=None,
                    stderr=None,
                    pass_fds=self._settings.fds,
                    env=self._env,
                )
            except OSError as exc:
                self._fail(f"cannot start worker {slot}: {exc}")
                return
            async with proc:
                self._procs[slot] = proc
                logger.info("worker %d started (pid %d)", slot, proc.pid)
                if self._stopping.is_set():  # the signal came while it was starting
                    _send(proc, signal.SIGTERM)
                try:
                    code = await proc.wait()
                finally:
                    del self._procs[slot]
            if self._stopping.is_set():
                logger.info("worker %d (pid %d) %s", slot, proc.pid, _describe_exit(code))
                return
            if code == EXIT_BOOT_FAILED:
                self._fail(f"worker {slot} (pid {proc.pid}) could not load the app; stopping")
                return
            if anyio.current_time() - started >= _HEALTHY:
                delay = _RESTART_MIN
            logger.warning(
                "worker %d (pid %d) %s; restarting it in %.1f s",
                slot,
                proc.pid,
                _describe_exit(code),
                delay,
            )
            with anyio.move_on_after(delay):
                await self._stopping.wait()
            delay = min(delay * 2, _RESTART_MAX)

    def _fail(self, message: str) -> None:
        logger.error("%s", message)
        self._failed = True
        self._stop()

    def _stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._signal_all(signal.SIGTERM)
        if self._tg is not None:
            self._tg.start_soon(self._kill_stragglers)

    def _signal_all(self, signum: signal.Signals) -> None:
        for proc in list(self._procs.values()):
            _send(proc, signum)

    async def _kill_stragglers(self) -> None:
        await anyio.sleep(self._settings.drain_timeout + _KILL_MARGIN)
        if self._procs:
            logger.warning("killing %d worker(s) that did not stop in time", len(self._procs))
            self._signal_all(signal.SIGKILL)

    async def _watch_signals(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if not self._stopping.is_set():
                    logger.info(
                        "%s received, stopping %d worker(s) (again to force)",
                        name,
                        len(self._procs),
                    )
                    self._stop()
                else:
                    logger.warning("%s received again, workers abort their connections", name)
                    self._signal_all(signal.SIGQUIT)


def _send(proc: anyio.abc.Process, signum: signal.Signals) -> None:
    try:
        proc.send_signal(signum)
    except ProcessLookupError:
        pass


# -- a worker ----------------------------------------------------------------


def _load_app(settings: WorkerSettings) -> App[Any, Any]:
    obj = import_from_string(settings.app)
    if settings.factory:
        obj = obj()
    if not isinstance(obj, App):
        raise TypeError(f"{settings.app!r} is not a tcpkit App but {type(obj).__name__}")
    app: App[Any, Any] = obj  # pyright: ignore[reportUnknownVariableType]
    return app


def _app_settings(app: App[Any, Any], settings: WorkerSettings) -> Settings:
    """The app's settings with the command line's overrides."""
    changes: dict[str, Any] = {}
    if settings.max_connections is not None:
        changes["max_connections"] = settings.max_connections
    if settings.proxy_protocol:
        changes["proxy_protocol"] = True
    if settings.busy_poll is not None:
        changes["busy_poll"] = settings.busy_poll
    return app.settings.replace(**changes)


def _ssl_context(settings: WorkerSettings) -> ssl.SSLContext | None:
    if settings.ssl_certfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    return context


async def _serve_worker(
    app: App[Any, Any],
    app_settings: Settings,
    socks: list[socket.socket],
    context: ssl.SSLContext | None,
    drain_timeout: float,
) -> None:
    parent = os.getppid()
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGQUIT) as signals:
        async with anyio.create_task_group() as tg:

            async def serve(*, task_status: anyio.abc.TaskStatus[Server[Any, Any]]) -> None:
                await app.serve(
                    sockets=socks, ssl=context, settings=app_settings, task_status=task_status
                )
                tg.cancel_scope.cancel()  # the server has stopped: stop watching

            server: Server[Any, Any] = await tg.start(serve)
            logger.info("worker pid %d serving", os.getpid())
            tg.start_soon(_watch_parent, server, parent, drain_timeout)
            async for signum in signals:
                if signum == signal.SIGQUIT:
                    logger.warning("worker pid %d: SIGQUIT, aborting", os.getpid())
                    server.abort()
                elif not server.closing:
                    logger.info("worker pid %d: SIGTERM, draining", os.getpid())
                    server.start_shutdown(grace=0, drain_timeout=drain_timeout)


async def _watch_parent(server: Server[Any, Any], parent: int, drain_timeout: float) -> None:
    while True:  # no event tells a process that its parent died: poll (one cheap syscall)
        await anyio.sleep(_PARENT_POLL)
        if os.getppid() != parent:
            break
    if not server.closing:
        logger.warning("worker pid %d: the supervisor is gone, draining", os.getpid())
        server.start_shutdown(grace=0, drain_timeout=drain_timeout)


def worker_main(argv: Sequence[str]) -> int:
    """Run one worker: ``python -m tcpkit _worker SETTINGS_JSON``; return its exit status.

    Exits with :data:`EXIT_BOOT_FAILED` if the settings, the app or the TLS
    certificate cannot be loaded, else 0 after serving until SIGTERM (drain)
    or SIGQUIT (abort).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor forwards Ctrl-C
    try:
        settings = WorkerSettings.from_json(argv[0])
    except (IndexError, ValueError, TypeError) as exc:
        print(f"tcpkit worker: bad settings: {exc}", file=sys.stderr)
        return EXIT_BOOT_FAILED
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        app = _load_app(settings)
        context = _ssl_context(settings)
        socks = [socket.socket(fileno=fd) for fd in settings.fds]
    except Exception as exc:
        logger.exception("worker pid %d cannot start", os.getpid(), exc_info=exc)
        return EXIT_BOOT_FAILED
    options = {"use_uvloop": True} if settings.use_uvloop else {}
    try:
        anyio.run(
            functools.partial(
                _serve_worker,
                app,
                _app_settings(app, settings),
                socks,
                context,
                settings.drain_timeout,
            ),
            backend=settings.backend,
            backend_options=options,
        )
    except ServerError as exc:
        logger.error("worker pid %d: %s", os.getpid(), exc)
        return EXIT_BOOT_FAILED
    return 0
