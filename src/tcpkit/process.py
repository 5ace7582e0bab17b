"""One serving process of ``tcpkit run``: the app, its signals and its operations.

The single process of ``tcpkit run`` and each ``--workers`` worker run a
:class:`ServingProcess`: it serves the app on listening sockets it is given
(bound by the CLI, inherited from systemd or from a reload, or from the
supervisor), and around it the connection observer (``--access-log``,
metrics, control), the control socket, the metrics endpoint, ``sd_notify``
and its watchdog, and the signals:

* single process: SIGINT/SIGTERM drain (a second one aborts: exit 1), SIGHUP
  reloads (see :mod:`tcpkit.reload`);
* worker: SIGTERM drains (however many times it comes), SIGQUIT aborts,
  SIGINT and SIGHUP are left to the supervisor; a worker whose supervisor
  disappears drains by itself.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from ._systemd import Notifier
from .app import App
from .control import ControlError, control_app, parse_limit
from .observe import AccessLog, Recorder
from .observer import Observer, peer_of
from .reload import Handover, check_app, reload_on_changes, unblock_signals
from .runconfig import RunConfig, app_overrides
from .runner import Stopper, backend_description, describe_addresses
from .server import Server
from .settings import Settings

__all__ = ["Outcome", "ServingProcess", "WorkerLink"]

logger = logging.getLogger("tcpkit.server")


async def serve_aux(
    app: App[Any, Any],
    sock: socket.socket,
    announce: bool,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control socket or the metrics endpoint on ``sock`` until cancelled.

    With ``announce``, logs where: ``control socket at unix:PATH``, ``metrics
    at http://HOST:PORT/metrics``.
    """
    async with app.start(sockets=[sock]) as server:
        if announce:
            where = describe_addresses(server, tls=False)
            if where.startswith("unix:"):
                logger.info("control socket at %s (tcpkit ctl %s help)", where, where[5:])
            else:
                address = where.removeprefix("tcp ")
                logger.info("metrics at http://%s/metrics (and /healthz)", address)
        task_status.started()
        await anyio.sleep_forever()


@dataclass
class Outcome:
    """How a serving process ended: its exit status, and whether to re-execute it."""

    code: int = 0
    reload: bool = False


@dataclass
class WorkerLink:
    """A worker's side of its supervisor: the status channel and its slot number.

    The worker writes ``ready`` once it serves and ``final {json}`` (its last
    counts) when it ends; the channel's end of file tells it the supervisor is
    gone.
    """

    channel: socket.socket
    slot: int

    def send(self, line: str) -> None:
        """Write one status line (never raises: the supervisor may be gone)."""
        try:
            self.channel.setblocking(True)
            self.channel.sendall(line.encode() + b"\n")
        except OSError:
            pass


@dataclass
class Sockets:
    """The listening sockets of a serving process."""

    app: list[socket.socket]
    control: socket.socket | None = None
    metrics: socket.socket | None = None


@dataclass
class ServingProcess:
    """Serves ``app`` on ``sockets.app`` with the operations ``config`` asks for."""

    config: RunConfig
    app: App[Any, Any]
    context: ssl.SSLContext | None
    sockets: Sockets
    notifier: Notifier = field(default_factory=Notifier)
    worker: WorkerLink | None = None
    handover: Handover | None = None
    """Duplicates of the listening sockets kept for a reload; closed when a stop begins
    (so that new connects are refused, not queued)."""
    outcome: Outcome = field(default_factory=Outcome)
    recorder: Recorder | None = None
    observers: list[Observer] = field(default_factory=list[Observer])
    settings: Settings = field(init=False)
    _server: Server[Any, Any] | None = None
    _stopper: Stopper | None = None
    _tg: anyio.abc.TaskGroup | None = None
    _reloading: bool = False
    _drain_requested: bool = False

    def __post_init__(self) -> None:
        config = self.config
        observers: list[Observer] = []
        if config.access_log:
            observers.append(AccessLog())
        if (
            config.metrics is not None
            or config.control is not None
            or self.sockets.control is not None
        ):
            self.recorder = Recorder()
            observers.append(self.recorder)
        self.observers = observers
        self.settings = self.app.settings.replace(**app_overrides(config))

    # -- running ------------------------------------------------------------

    async def run(self) -> Outcome:
        """Serve until stopped; return how it ended.

        Raises:
            ServerError: the sockets could not be served.
        """
        async with anyio.create_task_group() as tg:
            self._tg = tg
            serving = anyio.Event()
            # Signals are ours before the first connection is accepted; one that
            # comes while the server starts is acted on once it serves.
            await tg.start(self._watch_signals, serving)
            async with self.app.start(
                sockets=self.sockets.app,
                ssl=self.context,
                settings=self.settings,
                observers=self.observers,
            ) as server:
                self._server = server
                self._stopper = Stopper(server, self.config.drain_timeout, tg)
                serving.set()
                if self.sockets.control is not None:
                    control = control_app(self.command, f"{server.name}-control")
                    quiet = self.worker is not None  # the supervisor's private socket
                    await tg.start(serve_aux, control, self.sockets.control, not quiet)
                if self.sockets.metrics is not None:
                    from .metrics import metrics_app

                    name = f"{server.name}-metrics"
                    metrics = metrics_app(self._metrics_snapshot, self.healthy, name)
                    await tg.start(serve_aux, metrics, self.sockets.metrics, True)
                where = describe_addresses(server, tls=self.context is not None)
                self._announce(server, where)
                self.notifier.ready(f"serving on {where}")
                tg.start_soon(self.notifier.watchdog)
                if self.config.reload and self.worker is None:
                    tg.start_soon(self._watch_code)
                if self.worker is not None:
                    tg.start_soon(self._watch_supervisor, self.worker)
                await server.wait_stopped()
                self._stopper.finished()
            tg.cancel_scope.cancel()
        if self._stopper is not None and self._stopper.forced:
            self.outcome.code = 1
        if self.worker is not None:
            self.worker.send("final " + json.dumps(self.snapshot(), separators=(",", ":")))
        return self.outcome

    def _announce(self, server: Server[Any, Any], where: str) -> None:
        if self.worker is not None:
            logger.info("worker %d (pid %d) serving", self.worker.slot, os.getpid())
            self.worker.send("ready")
            return
        logger.info(
            "%s (%s) running on %s [backend %s] (Press CTRL+C to quit)",
            server.name,
            self.config.app,
            where,
            backend_description(),
        )

    # -- signals ------------------------------------------------------------------

    async def _watch_signals(
        self,
        serving: anyio.Event,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        watched: tuple[signal.Signals, ...]
        if self.worker is not None:
            watched = (signal.SIGTERM, signal.SIGQUIT)
        else:
            watched = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        with anyio.open_signal_receiver(*watched) as signals:
            unblock_signals()  # blocked across a reload's exec: they reach us from now on
            task_status.started()
            async for signum in signals:
                await serving.wait()
                self._on_signal(signal.Signals(signum))

    def _on_signal(self, signum: signal.Signals) -> None:
        """Reload (SIGHUP), abort (SIGQUIT), else drain, or abort if draining already."""
        stopper = self._stopper
        assert stopper is not None
        name = signum.name
        if self.worker is not None:  # which process says it, in the shared log
            name = f"worker {self.worker.slot} (pid {os.getpid()}): {name}"
        if signum == signal.SIGHUP:
            self.request_reload(f"{name} received")
        elif signum == signal.SIGQUIT:
            stopper.force(f"{name} received")
        elif self.outcome.reload and stopper.draining and not stopper.forced:
            self.outcome.reload = False  # a stop during a reload's drain: stop instead
            self._release_sockets()
            logger.info("%s received: stopping instead of reloading", name)
            self.notifier.stopping("stopping")
        elif not stopper.draining:
            self.outcome.reload = False
            self._release_sockets()
            self.notifier.stopping("draining")
            again = None if self.worker is not None else name
            stopper.drain(f"{name} received", again=again)
        elif self.worker is None:
            stopper.force(f"{name} received again")

    async def _watch_supervisor(self, link: WorkerLink) -> None:
        """Drain if the supervisor goes away (its end of the channel closes)."""
        link.channel.setblocking(False)
        while True:
            await anyio.wait_readable(link.channel)
            try:
                data = link.channel.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                break
        stopper = self._stopper
        if stopper is not None and not stopper.draining:
            self._release_sockets()
            stopper.drain("the supervisor is gone")

    # -- reload -------------------------------------------------------------------

    def request_reload(self, why: str) -> bool:
        """Begin a graceful reload (checked first); ``False`` if one cannot begin now."""
        stopper = self._stopper
        if self.worker is not None or stopper is None or self._tg is None:
            return False
        if stopper.draining or self._reloading:
            logger.info(
                "%s: ignored (already %s)", why, "reloading" if self._reloading else "stopping"
            )
            return False
        self._reloading = True
        self._tg.start_soon(self._reload, why)
        return True

    async def _reload(self, why: str) -> None:
        stopper = self._stopper
        assert stopper is not None
        logger.info("%s: checking that the app loads before reloading", why)
        problem = await anyio.to_thread.run_sync(check_app, self.config.app, self.config.factory)
        if problem is not None:
            logger.error("reload refused, the app does not load: %s; still serving", problem)
            self._reloading = False
            return
        if stopper.draining:  # stopped meanwhile
            return
        self.outcome.reload = True
        self.notifier.reloading("reloading")
        server = self._server
        assert server is not None
        server.set_max_connections(0)  # accept no more: new clients wait in the backlog
        stopper.drain(why, verb="reloading (the listening sockets stay open)")

    async def _watch_code(self) -> None:
        config = self.config
        await reload_on_changes(config.app, config.reload_dir, self.request_reload, logger)

    # -- operations -----------------------------------------------------------

    def healthy(self) -> bool:
        """Serving and not draining (the ``/healthz`` readiness answer)."""
        server = self._server
        return server is not None and not server.closing

    def snapshot(self) -> dict[str, Any]:
        """Counts of this process: ``stats`` plus the recorder's (see tcpkit.observe)."""
        server = self._server
        data: dict[str, Any] = {"pid": os.getpid()}
        if server is not None:
            data["stats"] = server.stats.as_dict()
            data["max_connections"] = server.max_connections
            data["closing"] = server.closing
        if self.recorder is not None:
            data.update(self.recorder.snapshot())
        return data

    async def _metrics_snapshot(self) -> dict[str, Any]:
        return self.snapshot()

    def connections(self) -> list[dict[str, Any]]:
        """The live connections as the ``connections`` command lists them."""
        server = self._server
        out: list[dict[str, Any]] = []
        for conn in server.connections if server is not None else []:
            age = self.recorder.age(conn.id) if self.recorder is not None else None
            out.append(
                {
                    "id": conn.id,
                    "peer": peer_of(conn.remote_addr),
                    "age": None if age is None else round(age, 3),
                    "pending_output": conn.pending_output,
                    "shutting_down": conn.shutting_down,
                }
            )
        return out

    async def command(self, verb: str, args: Sequence[str]) -> dict[str, Any]:
        """Carry out a control command (see tcpkit.control).

        Raises:
            ControlError: a bad argument, or a command this process cannot do.
        """
        server = self._server
        if server is None:
            raise ControlError("not serving yet")
        if verb == "stats":
            return self.snapshot()
        if verb == "connections":
            return {"pid": os.getpid(), "connections": self.connections()}
        if verb == "set-max":
            limit = parse_limit(list(args))
            server.set_max_connections(limit)
            return {"max_connections": limit}
        if verb == "kick":
            return self._kick(server, args)
        if verb == "drain":
            return self.request_drain()
        if verb == "reload":
            return self._reload_command()
        raise ControlError(f"unknown command {verb!r}")

    def _kick(self, server: Server[Any, Any], args: Sequence[str]) -> dict[str, Any]:
        """``kick ID``: shut one connection down.

        Raises:
            ControlError: a bad argument, or no such live connection.
        """
        if len(args) != 1 or not args[0].isdigit():
            raise ControlError("usage: kick ID (a connection id, as 'connections' lists it)")
        conn = server.get_connection(int(args[0]))
        if conn is None:
            raise ControlError(f"no live connection {args[0]}")
        conn.shutdown()
        return {"kicked": conn.id}

    def _reload_command(self) -> dict[str, Any]:
        """``reload`` on the control socket (a single process only).

        Raises:
            ControlError: a worker, or a reload or stop is under way.
        """
        if self.worker is not None:
            raise ControlError("a worker is reloaded by its supervisor")
        if not self.request_reload("reload requested on the control socket"):
            raise ControlError("cannot reload now: already reloading or stopping")
        return {"reloading": True}

    def request_drain(self) -> dict[str, Any]:
        """Stop accepting; the process stops once its connections have ended by themselves."""
        server = self._server
        assert server is not None
        if not server.closing:
            logger.info(
                "%s: drain requested: stopped accepting; %d connection(s) go on until they end",
                server.name,
                server.connection_count,
            )
            self.notifier.stopping("draining")
            self.outcome.reload = False
            self._release_sockets()
            server.start_shutdown()
        return {"draining": server.connection_count}

    def _release_sockets(self) -> None:
        """A stop (not a reload): let the listening sockets close for good."""
        if self.handover is not None:
            self.handover.close()
