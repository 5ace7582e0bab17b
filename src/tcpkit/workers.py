"""``tcpkit run --workers N``: N processes serving the same listening sockets.

The process the command started is the *supervisor*. It binds every listening
socket itself (so ``--port 0`` gives one port that every worker serves), then
starts N *worker* processes (``python -m tcpkit _worker FD``) that inherit
those sockets and serve them with the app; the kernel spreads new connections
over the workers' ``accept`` calls. Each worker talks to the supervisor over a
private socket pair (file descriptor ``FD``): it receives its settings there
(never on its command line, where ``ps`` would show a key password), and
says ``ready`` once it serves, ``error ...`` if it cannot start, and ``final
...`` (its last counts) when it ends. The supervisor:

* fails fast: a worker that dies before it first serves (an app that does
  not load, a missing backend, an error in ``on_started``) stops every worker
  and the supervisor exits 1 with that worker's error;
* restarts a worker that dies once its slot has served, after a delay that
  doubles (0.2 s up to 30 s) while workers keep dying young, so a crashing
  app cannot make it spin;
* on SIGHUP, restarts the workers one at a time with freshly imported code (a
  rolling restart): a new worker starts and reports ``ready`` before the old
  one it replaces is told to drain, so N workers always serve. If a new
  worker cannot start, the reload stops there and the running workers stay;
* on SIGINT or SIGTERM sends SIGTERM to every worker, and each worker closes
  its listeners and drains its connections (bounded by ``--drain-timeout``,
  after which it aborts them); once all workers have exited it exits 0. A
  second signal makes it send SIGQUIT: the workers then abort their
  connections at once, and the supervisor exits 1. A worker still running
  ``drain_timeout + 10`` seconds after the first signal is killed;
* serves ``--control`` and ``--metrics`` for all workers, asking each worker
  over an internal control socket and adding the answers up.

A worker drains on SIGTERM (more SIGTERMs change nothing, so a signal sent to
the whole process group or cgroup, as systemd does, plus the supervisor's own
is still one graceful stop), aborts on SIGQUIT, ignores SIGINT and SIGHUP (a
Ctrl-C in a terminal reaches the whole process group; the supervisor forwards
it), and drains by itself if its supervisor disappears.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import anyio.abc

from ._systemd import Notifier
from .control import ControlError, control_app, parse_limit, request
from .exceptions import ServerError
from .observe import merge_snapshots
from .process import serve_aux
from .runconfig import RunConfig

__all__ = ["EXIT_BOOT_FAILED", "WORKER_COMMAND", "Supervisor", "WorkerSettings", "worker_main"]

WORKER_COMMAND = "_worker"
"""``python -m tcpkit _worker FD`` runs one worker (see :func:`worker_main`)."""

logger = logging.getLogger("tcpkit.workers")

EXIT_BOOT_FAILED = 3
"""A worker's exit status when it cannot start serving."""

_RESTART_MIN = 0.2  # seconds before restarting a worker that died
_RESTART_MAX = 30.0
_HEALTHY = 10.0  # a worker that lived this long resets the restart delay
_KILL_MARGIN = 10.0  # seconds past the drain timeout before SIGKILL
_SETTINGS_TIMEOUT = 30.0  # how long a worker waits for its settings
_ASK_TIMEOUT = 5.0  # how long the supervisor waits for a worker's control answer

_PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


@dataclass(frozen=True)
class WorkerSettings:
    """What one worker needs: the run settings, its sockets, its slot, its control path."""

    config: RunConfig
    fds: tuple[int, ...] = ()
    slot: int = 1
    control: str | None = None

    def to_json(self) -> str:
        """The settings as one JSON object."""
        return json.dumps(
            {
                "config": json.loads(self.config.to_json()),
                "fds": list(self.fds),
                "slot": self.slot,
                "control": self.control,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> WorkerSettings:
        """Settings from :meth:`to_json`'s output.

        Raises:
            ValueError: ``text`` is not such a JSON object.
        """
        loaded: Any = json.loads(text)
        if not isinstance(loaded, dict):
            raise ValueError("worker settings must be a JSON object with a config")
        data = cast("dict[str, Any]", loaded)
        if not isinstance(data.get("config"), dict):
            raise ValueError("worker settings must be a JSON object with a config")
        fds: Any = data.get("fds", [])
        slot: Any = data.get("slot", 1)
        control: Any = data.get("control")
        if not isinstance(fds, list):
            raise ValueError("worker settings: fds must be a list of numbers")
        items: list[Any] = fds  # pyright: ignore[reportUnknownVariableType]
        numbers = [fd for fd in items if isinstance(fd, int)]
        if len(numbers) != len(items) or not isinstance(slot, int):
            raise ValueError("worker settings: fds and slot must be numbers")
        return cls(
            config=RunConfig.from_json(json.dumps(data["config"])),
            fds=tuple(numbers),
            slot=slot,
            control=control if isinstance(control, str) else None,
        )


def _worker_env() -> dict[str, str]:
    """The environment of a worker: this tcpkit importable, systemd's variables removed.

    The worker must import this same tcpkit: its directory goes on the
    worker's ``PYTHONPATH`` unless it is a site directory (already on the path,
    and never to be put before the standard library).
    """
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    site_dirs = {*site.getsitepackages(), site.getusersitepackages()}
    if package_root not in site_dirs and package_root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([package_root, *paths])
    return env


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "ended"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


@dataclass(eq=False)
class _Worker:
    """One worker process and what it said on its channel."""

    slot: int
    generation: int
    control: str | None
    proc: anyio.abc.Process | None = None
    started_at: float = 0.0
    ready: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)
    was_ready: bool = False
    error: str | None = None
    final: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    code: int | None = None
    retiring: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def signal(self, signum: signal.Signals) -> None:
        if self.proc is not None and self.code is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)


class Supervisor:
    """Keeps ``workers`` worker processes serving ``fds`` until told to stop."""

    def __init__(
        self,
        config: RunConfig,
        workers: int,
        fds: Sequence[int],
        *,
        control: socket.socket | None = None,
        metrics: socket.socket | None = None,
        notifier: Notifier | None = None,
        announce: Callable[[], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("the number of workers must be at least 1")
        self.config = config
        self.workers = workers
        self.fds = tuple(fds)
        self.control_sock = control
        self.metrics_sock = metrics
        self.notifier = notifier or Notifier({})
        self.announce = announce
        self._env = _worker_env()
        self._current: dict[int, _Worker] = {}
        self._all: set[_Worker] = set()
        self._generation = 0
        self._delays = dict.fromkeys(range(1, workers + 1), _RESTART_MIN)
        self._served: set[int] = set()  # slots whose worker once reported ready
        self._stopping = False
        self._forced = False
        self._failed: str | None = None
        self._reloading = False
        self._retired: dict[str, Any] = merge_snapshots([])
        self._tg: anyio.abc.TaskGroup | None = None
        self._idle = anyio.Event()  # set when no worker runs (after stopping)
        self._dir: str | None = None

    # -- running ------------------------------------------------------------

    async def run(self) -> int:
        """Serve until stopped; the exit status (0, or 1 after a failure or a forced stop)."""
        needs_control = self.control_sock is not None or self.metrics_sock is not None
        if needs_control:
            self._dir = tempfile.mkdtemp(prefix="tcpkit-")
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await tg.start(self._watch_signals)
                await self._serve_operations(tg)
                if self.announce is not None:
                    self.announce()
                await self._start_workers(tg)
                await self._idle.wait()
                tg.cancel_scope.cancel()
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
        if self._failed is not None:
            raise ServerError(self._failed)
        logger.info("all workers stopped")
        return 1 if self._forced else 0

    async def _serve_operations(self, tg: anyio.abc.TaskGroup) -> None:
        """Serve ``--control`` and ``--metrics`` (for all workers) in ``tg``, if asked for."""
        if self.control_sock is not None:
            control = control_app(self.command, "control")
            await tg.start(serve_aux, control, self.control_sock, True)
        if self.metrics_sock is not None:
            from .metrics import metrics_app

            app = metrics_app(self.metrics_snapshot, self.healthy, "metrics")
            await tg.start(serve_aux, app, self.metrics_sock, True)

    async def _start_workers(self, tg: anyio.abc.TaskGroup) -> None:
        """Start every slot's first worker; once all serve, say so and watch in ``tg``."""
        first = [self._start(slot) for slot in range(1, self.workers + 1)]
        for worker in first:
            self._current[worker.slot] = worker
        for worker in first:
            await self._wait_ready(worker)
            if self._stopping:
                return
        logger.info("%d worker(s) serving", self.workers)
        self.notifier.ready(f"{self.workers} worker(s) serving")
        tg.start_soon(self.notifier.watchdog)
        if self.config.reload:
            tg.start_soon(self._watch_code)

    def _start(self, slot: int) -> _Worker:
        """Start a worker for ``slot`` (in the background); it is not current yet."""
        self._generation += 1
        control = None
        if self._dir is not None:
            control = os.path.join(self._dir, f"w{slot}-{self._generation}.sock")
        worker = _Worker(slot, self._generation, control)
        self._all.add(worker)
        assert self._tg is not None
        self._tg.start_soon(self._run_worker, worker)
        return worker

    async def _wait_ready(self, worker: _Worker) -> bool:
        """Wait until ``worker`` serves (``True``) or ends without serving (``False``)."""
        async with anyio.create_task_group() as tg:

            async def wait(event: anyio.Event) -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(wait, worker.ready)
            tg.start_soon(wait, worker.done)
        return worker.was_ready

    async def _run_worker(self, worker: _Worker) -> None:
        """Start the process, read its channel, then decide what its end means."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        settings = WorkerSettings(self.config, self.fds, worker.slot, worker.control)
        try:
            try:
                worker.proc = await anyio.open_process(
                    [sys.executable, "-m", "tcpkit", WORKER_COMMAND, str(theirs.fileno())],
                    stdin=subprocess.DEVNULL,
                    stdout=None,
                    stderr=None,
                    pass_fds=(*self.fds, theirs.fileno()),
                    env=self._env,
                )
            except OSError as exc:
                worker.error = f"cannot start a worker: {exc}"
                worker.done.set()
                self._worker_ended(worker)
                return
            finally:
                theirs.close()
            worker.started_at = anyio.current_time()
            logger.info("worker %d started (pid %d)", worker.slot, worker.pid)
            if self._stopping:  # the signal came while it was starting
                worker.signal(signal.SIGTERM)
            async with worker.proc:
                await self._read_channel(worker, ours, settings)
                worker.code = await worker.proc.wait()
        finally:
            ours.close()
        worker.done.set()
        self._worker_ended(worker)

    async def _read_channel(
        self, worker: _Worker, channel: socket.socket, settings: WorkerSettings
    ) -> None:
        channel.setblocking(True)
        try:
            channel.sendall(settings.to_json().encode() + b"\n")
        except OSError:
            return
        channel.setblocking(False)
        buffer = b""
        while True:
            await anyio.wait_readable(channel)
            try:
                chunk = channel.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                self._status(worker, line.decode(errors="replace"))

    def _status(self, worker: _Worker, line: str) -> None:
        kind, _, rest = line.partition(" ")
        if kind == "ready":
            worker.was_ready = True
            self._served.add(worker.slot)
            worker.ready.set()
        elif kind == "error":
            worker.error = rest
        elif kind == "final":
            with contextlib.suppress(ValueError):
                data: Any = json.loads(rest)
                if isinstance(data, dict):
                    worker.final = data  # pyright: ignore[reportUnknownMemberType]

    def _worker_ended(self, worker: _Worker) -> None:
        self._all.discard(worker)
        self._retire_counts(worker)
        current = self._current.get(worker.slot) is worker
        how = _describe_exit(worker.code)
        if self._stopping or worker.retiring or not current:
            if worker.was_ready or worker.retiring:
                logger.info("worker %d (pid %d) %s", worker.slot, worker.pid, how)
        elif not worker.was_ready and worker.slot not in self._served:
            why = worker.error or how
            self._fail(f"worker {worker.slot} (pid {worker.pid}) could not start serving: {why}")
        else:
            self._restart_later(worker, how)
        if self._stopping and not self._all:
            self._idle.set()

    def _retire_counts(self, worker: _Worker) -> None:
        """Keep an ended worker's last counts in the totals: counters never go back."""
        last = worker.final or worker.last
        if last is None:
            return
        last = dict(last)
        stats = dict(last.get("stats") or {})
        stats["current"] = 0
        last["stats"] = stats
        self._retired = merge_snapshots([self._retired, last])

    def _restart_later(self, worker: _Worker, how: str) -> None:
        """Replace a worker that died after serving, after its slot's back-off delay."""
        delay = self._delays[worker.slot]
        if anyio.current_time() - worker.started_at >= _HEALTHY:
            delay = _RESTART_MIN
        logger.warning(
            "worker %d (pid %d) %s; restarting it in %.1f s",
            worker.slot,
            worker.pid,
            how,
            delay,
        )
        self._delays[worker.slot] = min(delay * 2, _RESTART_MAX)
        assert self._tg is not None
        self._tg.start_soon(self._restart, worker.slot, delay)

    async def _restart(self, slot: int, delay: float) -> None:
        await anyio.sleep(delay)
        if self._stopping:
            return
        worker = self._start(slot)
        self._current[slot] = worker

    def _fail(self, message: str) -> None:
        logger.error("%s; stopping", message)
        if self._failed is None:
            self._failed = message
        self._stop()

    def _stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.notifier.stopping("stopping the workers")
        for worker in list(self._all):
            worker.signal(signal.SIGTERM)
        if not self._all:
            self._idle.set()
        if self._tg is not None:
            self._tg.start_soon(self._kill_stragglers)

    async def _kill_stragglers(self) -> None:
        await anyio.sleep(self.config.drain_timeout + _KILL_MARGIN)
        if self._all:
            logger.warning("killing %d worker(s) that did not stop in time", len(self._all))
            for worker in list(self._all):
                worker.signal(signal.SIGKILL)

    async def _watch_signals(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    self.request_reload(f"{name} received")
                elif not self._stopping:
                    logger.info(
                        "%s received, stopping %d worker(s) (again to force)", name, len(self._all)
                    )
                    self._stop()
                else:
                    logger.warning("%s received again, workers abort their connections", name)
                    self._forced = True
                    for worker in list(self._all):
                        worker.signal(signal.SIGQUIT)

    # -- rolling restart ------------------------------------------------------------

    def request_reload(self, why: str) -> bool:
        """Begin a rolling restart; ``False`` if one is running or the workers are stopping."""
        if self._stopping or self._reloading or self._tg is None:
            logger.info(
                "%s: ignored (already %s)", why, "stopping" if self._stopping else "reloading"
            )
            return False
        self._reloading = True
        self._tg.start_soon(self._reload, why)
        return True

    async def _reload(self, why: str) -> None:
        logger.info("%s: restarting %d worker(s) one at a time", why, self.workers)
        self.notifier.reloading("rolling restart")
        replaced = 0
        try:
            for slot in range(1, self.workers + 1):
                if self._stopping:
                    return
                old = self._current.get(slot)
                new = self._start(slot)
                if not await self._wait_ready(new):
                    logger.error(
                        "reload stopped: a new worker %d could not start serving: %s; "
                        "%d of %d worker(s) replaced, the others keep serving",
                        slot,
                        new.error or _describe_exit(new.code),
                        replaced,
                        self.workers,
                    )
                    return
                self._current[slot] = new
                if old is not None:
                    old.retiring = True
                    logger.info("worker %d: pid %d serves, draining pid %d", slot, new.pid, old.pid)
                    old.signal(signal.SIGTERM)
                replaced += 1
            logger.info("reload done: %d worker(s) replaced", replaced)
        finally:
            self._reloading = False
            if not self._stopping:
                self.notifier.ready(f"{self.workers} worker(s) serving")

    async def _watch_code(self) -> None:
        from .reload import reload_on_changes

        config = self.config
        await reload_on_changes(config.app, config.reload_dir, self.request_reload, logger)

    # -- control and metrics ----------------------------------------------------------

    def healthy(self) -> bool:
        """Not stopping, and every slot has a worker that reported ready."""
        return not self._stopping and all(
            w.was_ready and w.code is None for w in self._current.values()
        )

    def _serving(self) -> list[_Worker]:
        return sorted(
            (w for w in self._all if w.was_ready and w.code is None and w.control),
            key=lambda w: (w.slot, w.generation),
        )

    async def _ask(self, worker: _Worker, line: str) -> dict[str, Any]:
        assert worker.control is not None
        try:
            with anyio.fail_after(_ASK_TIMEOUT):
                reply = await request(worker.control, line)
        except (OSError, TimeoutError, ValueError) as exc:
            return {"ok": False, "error": f"worker {worker.slot} (pid {worker.pid}): {exc}"}
        return reply

    async def _ask_all(self, line: str) -> list[tuple[_Worker, dict[str, Any]]]:
        workers = self._serving()
        replies: list[dict[str, Any]] = [{} for _ in workers]

        async def ask(i: int, worker: _Worker) -> None:
            replies[i] = await self._ask(worker, line)

        async with anyio.create_task_group() as tg:
            for i, worker in enumerate(workers):
                tg.start_soon(ask, i, worker)
        return list(zip(workers, replies, strict=True))

    async def metrics_snapshot(self) -> dict[str, Any]:
        """Every worker's counts added up, with those of workers that have ended."""
        snaps: list[dict[str, Any]] = [self._retired]
        for worker, reply in await self._ask_all("stats"):
            if reply.get("ok"):
                worker.last = reply
                snaps.append(reply)
            elif worker.last is not None:
                snaps.append(worker.last)
        merged = merge_snapshots(snaps)
        merged["workers"] = sum(1 for w in self._current.values() if w.was_ready and w.code is None)
        return merged

    async def command(self, verb: str, args: Sequence[str]) -> dict[str, Any]:
        """A control command for all workers (see tcpkit.control).

        Raises:
            ControlError: a bad argument or a command that cannot be done now.
        """
        if verb == "stats":
            return await self._stats()
        if verb == "connections":
            return await self._connections()
        if verb == "set-max":
            limit = parse_limit(list(args))
            replies = await self._ask_all(f"set-max {'none' if limit is None else limit}")
            return {"max_connections": limit, "workers": len(replies)}
        if verb == "kick":
            return await self._kick(args)
        if verb == "drain":
            return await self._drain()
        if verb == "reload":
            if not self.request_reload("reload requested on the control socket"):
                raise ControlError("cannot reload now: already reloading or stopping")
            return {"reloading": True}
        raise ControlError(f"unknown command {verb!r}")

    async def _stats(self) -> dict[str, Any]:
        """``stats``: the counts added up, and each serving worker's own."""
        merged = await self.metrics_snapshot()
        merged["pid"] = os.getpid()
        merged["per_worker"] = [
            {"slot": w.slot, "pid": w.pid, "stats": (w.last or {}).get("stats", {})}
            for w in self._serving()
        ]
        return merged

    async def _connections(self) -> dict[str, Any]:
        """``connections``: every worker's, with ids made ``SLOT:ID``."""
        listed: list[dict[str, Any]] = []
        for worker, reply in await self._ask_all("connections"):
            for conn in reply.get("connections", []):
                listed.append({**conn, "id": f"{worker.slot}:{conn['id']}", "pid": worker.pid})
        return {"connections": listed}

    async def _kick(self, args: Sequence[str]) -> dict[str, Any]:
        """``kick SLOT:ID``: have that worker shut that connection down.

        Raises:
            ControlError: a bad argument, no such worker, or the worker's refusal.
        """
        slot_text, _, conn_text = (args[0] if len(args) == 1 else "").partition(":")
        if not slot_text.isdigit() or not conn_text.isdigit():
            raise ControlError("usage: kick WORKER:ID (as 'connections' lists it)")
        target = self._current.get(int(slot_text))
        if target is None or target.control is None:
            raise ControlError(f"no worker {slot_text}")
        reply = await self._ask(target, f"kick {conn_text}")
        if not reply.get("ok"):
            raise ControlError(str(reply.get("error")))
        return {"kicked": args[0]}

    async def _drain(self) -> dict[str, Any]:
        """``drain``: every worker stops accepting; the supervisor ends with the last one."""
        replies = await self._ask_all("drain")
        self._stopping = True  # no restarts: the supervisor ends with its last worker
        self.notifier.stopping("draining")
        if not self._all:
            self._idle.set()
        return {"draining": sum(int(r.get("draining", 0)) for _, r in replies)}


# -- a worker ----------------------------------------------------------------


def worker_main(argv: Sequence[str]) -> int:
    """Run one worker: ``python -m tcpkit _worker FD``; return its exit status.

    Reads its :class:`WorkerSettings` from the channel ``FD``. Exits with
    :data:`EXIT_BOOT_FAILED` (having written ``error ...`` on the channel) if
    the settings, the app, the backend or the TLS certificate cannot be
    loaded, else 0 after serving until SIGTERM (drain) or SIGQUIT (abort).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor forwards Ctrl-C
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # and reloads the workers itself
    try:
        channel = socket.socket(fileno=int(argv[0]))
    except (IndexError, ValueError, OSError) as exc:
        print(f"tcpkit worker: bad settings channel: {exc}", file=sys.stderr)
        return EXIT_BOOT_FAILED
    from .process import WorkerLink

    try:
        settings = _receive_settings(channel)
    except (OSError, ValueError, TypeError) as exc:
        print(f"tcpkit worker: bad settings: {exc}", file=sys.stderr)
        WorkerLink(channel, 0).send(f"error bad settings: {exc}")
        return EXIT_BOOT_FAILED
    link = WorkerLink(channel, settings.slot)
    try:
        return _serve_worker(settings, link)
    except Exception as exc:  # whatever stops it before it serves: say it, then exit
        message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ServerError) else str(exc)
        logger.error("worker %d (pid %d) cannot start: %s", settings.slot, os.getpid(), message)
        link.send(f"error {message}")
        return EXIT_BOOT_FAILED


def _receive_settings(channel: socket.socket) -> WorkerSettings:
    channel.settimeout(_SETTINGS_TIMEOUT)
    data = b""
    while b"\n" not in data:
        chunk = channel.recv(65536)
        if not chunk:
            raise ValueError("the supervisor closed the channel")
        data += chunk
    return WorkerSettings.from_json(data.split(b"\n", 1)[0].decode())


def _serve_worker(settings: WorkerSettings, link: Any) -> int:
    from .importer import ModuleRaised
    from .logconfig import configure_logging
    from .process import ServingProcess, Sockets
    from .runconfig import load_app, server_ssl_context
    from .runner import require_backend

    config = settings.config
    configure_logging(config.log_level, config.log_config)
    require_backend(config.backend, config.uvloop)
    try:
        app = load_app(config)
    except ModuleRaised as exc:
        cause = exc.__cause__
        logger.error("worker %d: %s", settings.slot, exc, exc_info=cause)
        raise ServerError(f"{exc}: {type(cause).__name__}: {cause}") from None
    context = server_ssl_context(config)
    socks = [socket.socket(fileno=fd) for fd in settings.fds]
    control = None
    if settings.control is not None:
        from .control import bind_control

        control = bind_control(settings.control)
    process = ServingProcess(
        dataclasses.replace(config, control=settings.control, metrics=None, reload=False),
        app,
        context,
        Sockets(socks, control=control),
        notifier=Notifier({}),
        worker=link,
    )
    try:
        outcome = anyio.run(
            process.run, backend=config.backend, backend_options=config.backend_options
        )
    finally:
        if settings.control is not None:
            with contextlib.suppress(OSError):
                os.unlink(settings.control)
    return outcome.code
