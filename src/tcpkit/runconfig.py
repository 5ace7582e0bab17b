"""The settings of ``tcpkit run``: flags, ``TCPKIT_*`` variables, and what they mean.

Every flag of ``tcpkit run`` also reads ``TCPKIT_<FLAG>`` from the
environment (``--max-connections`` is ``TCPKIT_MAX_CONNECTIONS``; the app is
``TCPKIT_APP``). Precedence: a flag on the command line, then the environment
variable, then the default. A list flag (``--host``, ``--fd``,
``--reload-dir``) takes a comma-separated list from its variable; an on/off
flag takes ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``.

This module turns the parsed flags into one frozen :class:`RunConfig` (also
what a ``--workers`` worker receives), and holds the one mapping from flags to
App options (:func:`app_overrides`), the TLS context, and the app loader, so
that the single process and the workers cannot disagree.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .app import App
from .importer import AppImportError, import_from_string

__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "RunConfig",
    "add_run_arguments",
    "app_overrides",
    "load_app",
    "server_ssl_context",
]

ENV_PREFIX = "TCPKIT_"

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class ConfigError(Exception):
    """A setting is wrong: one line for the user, no traceback."""


# -- value types: each raises ValueError/ArgumentTypeError with a clear reason --


def _number(text: str, kind: Callable[[str], Any]) -> Any:
    try:
        value = kind(text)
    except ValueError:
        name = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in ``low..high``."""

    def parse(text: str) -> int:
        value: int = _number(text, int)
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text!r}")
        return value

    parse.__name__ = "int"
    return parse


def float_at_least(low: float, high: float | None = None) -> Callable[[str], float]:
    """An argparse type: a number of seconds in ``low..high``."""

    def parse(text: str) -> float:
        value: float = _number(text, float)
        if value < low or (high is not None and value > high):
            bound = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound} (seconds), got {text!r}")
        return value

    parse.__name__ = "float"
    return parse


def file_mode(text: str) -> int:
    """An argparse type: permissions in octal (``660``, ``0o660``, ``0660``)."""
    digits = text.lower().removeprefix("0o")
    try:
        value = int(digits, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected octal permissions such as 660, got {text!r}"
        ) from None
    if not 0 <= value <= 0o7777:
        raise argparse.ArgumentTypeError(f"expected octal permissions such as 660, got {text!r}")
    return value


def host_port(text: str) -> str:
    """An argparse type: ``HOST:PORT`` (``[v6]:PORT``); kept as text, checked here."""
    from .client import parse_address

    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def proxy_network(text: str) -> str:
    """An argparse type: a network or address a PROXY header is trusted from (or ``unix``)."""
    from .proxy import ProxyTrust

    try:
        (entry,) = ProxyTrust([text]).entries
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a network or address such as 10.0.0.0/8, 127.0.0.1 or ::1 "
            f"(or unix), got {text!r}"
        ) from None
    return entry


def log_level(text: str) -> str:
    """An argparse type: a level name in any case (``INFO``, ``info``, ``Info``)."""
    value = text.strip().lower()
    if value == "warn":
        value = "warning"
    if value not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(LOG_LEVELS)} (any case), got {text!r}"
        )
    return value


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _env_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected 1/true/yes/on or 0/false/no/off, got {text!r}")


# -- the flags of `tcpkit run` -------------------------------------------------

# dest -> the default when neither the flag nor its variable is given
DEFAULTS: dict[str, Any] = {
    "app": None,
    "host": (),
    "port": None,
    "uds": None,
    "uds_mode": None,
    "fd": (),
    "backlog": 1024,
    "reuse_port": False,
    "backend": "asyncio",
    "uvloop": False,
    "workers": None,
    "max_connections": None,
    "idle_timeout": None,
    "message_timeout": None,
    "send_timeout": None,
    "max_lifetime": None,
    "max_connections_per_ip": None,
    "setup_timeout": None,
    "busy_poll": None,
    "drain_timeout": 30.0,
    "proxy_protocol": False,
    "proxy_trust": (),
    "tcp_nodelay": None,
    "tcp_keepalive": None,
    "ssl_certfile": None,
    "ssl_keyfile": None,
    "ssl_keyfile_password": None,
    "ssl_ca_certs": None,
    "ssl_cert_reqs": "none",
    "log_level": None,
    "log_config": None,
    "access_log": False,
    "metrics": None,
    "control": None,
    "reload": False,
    "reload_dir": (),
    "factory": False,
}


@dataclass(frozen=True)
class _Option:
    """One option of ``tcpkit run``: its names, its help, ``add_argument``'s other keywords."""

    names: tuple[str, ...]
    help: str
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict[str, Any])


def _option(*names: str, help: str, **kwargs: Any) -> _Option:
    """An :class:`_Option`, written as the ``add_argument`` call it stands for."""
    return _Option(names, help, kwargs)


_FLAG = argparse.BooleanOptionalAction

# Every option of `tcpkit run`, by argument group (None: the parser itself), in --help order.
_RUN_OPTIONS: tuple[tuple[str | None, tuple[_Option, ...]], ...] = (
    (
        None,
        (
            _option(
                "app",
                nargs="?",
                metavar="APP",
                help='the app: "module:attr" or "path/to/file.py:attr"',
            ),
        ),
    ),
    (
        "where to listen",
        (
            _option(
                "--host",
                action="append",
                metavar="HOST",
                help="address or host name to bind; repeat for several (default 127.0.0.1)",
            ),
            _option("--port", type=int_at_least(0, 65535), help="TCP port (default 12345)"),
            _option("--uds", metavar="PATH", help="listen on this Unix socket path"),
            _option(
                "--uds-mode",
                type=file_mode,
                metavar="MODE",
                help="permissions of the --uds socket file, in octal (e.g. 660)",
            ),
            _option(
                "--fd",
                action="append",
                type=int_at_least(0),
                metavar="N",
                help="serve the already listening socket inherited as file descriptor N; "
                "repeat for several (sockets passed by systemd in LISTEN_FDS are served "
                "automatically); inherited sockets replace --host/--port/--uds",
            ),
            _option(
                "--backlog",
                type=int_at_least(1),
                metavar="N",
                help="the kernel's queue of connections not yet accepted",
            ),
            _option(
                "--reuse-port",
                action=_FLAG,
                help="set SO_REUSEPORT so that independent processes can bind the same port",
            ),
        ),
    ),
    (
        "how to run",
        (
            _option("--backend", choices=("asyncio", "trio"), help="the event loop"),
            _option("--uvloop", action=_FLAG, help="use uvloop (asyncio backend)"),
            _option(
                "--workers",
                type=int_at_least(1),
                metavar="N",
                help="serve with N worker processes under a supervisor that restarts them",
            ),
            _option(
                "--factory",
                action=_FLAG,
                help="APP names a zero-argument callable returning an App",
            ),
            _option(
                "--reload",
                action=_FLAG,
                help="development: restart on a change to a .py file (needs tcpkit[reload])",
            ),
            _option(
                "--reload-dir",
                action="append",
                metavar="DIR",
                help="with --reload: a directory to watch; repeat for several "
                "(default: the app file's directory, or the current directory)",
            ),
        ),
    ),
    (
        "connections",
        (
            _option(
                "--max-connections",
                type=int_at_least(0),
                metavar="N",
                help="open connections allowed at once (per worker); more wait in the backlog",
            ),
            _option(
                "--max-connections-per-ip",
                type=int_at_least(1),
                metavar="N",
                help="open connections allowed from one client address (after PROXY); "
                "one more is closed at once and counted as rejected",
            ),
            _option(
                "--idle-timeout",
                type=float_at_least(0),
                metavar="SECONDS",
                help="close a connection after this long with no progress either way "
                "(no input, no output taken by the OS); 0 turns it off",
            ),
            _option(
                "--message-timeout",
                type=float_at_least(0),
                metavar="SECONDS",
                help="once a message has begun, the time it may take to arrive whole "
                "(cuts a slow trickle); 0 turns it off",
            ),
            _option(
                "--send-timeout",
                type=float_at_least(0),
                metavar="SECONDS",
                help="close a connection whose pending output makes no progress this long "
                "(a client that stopped reading); 0 turns it off",
            ),
            _option(
                "--max-lifetime",
                type=float_at_least(0),
                metavar="SECONDS",
                help="shut a connection down gracefully once it is this old; 0 turns it off",
            ),
            _option(
                "--setup-timeout",
                type=float_at_least(0),
                metavar="SECONDS",
                help="time allowed for the PROXY header, TLS handshake and pre_connect "
                "(the app's default: 10); 0 for no limit",
            ),
            _option(
                "--busy-poll",
                type=float_at_least(0, 1),
                metavar="SECONDS",
                help="after a read, poll for input up to this long instead of sleeping "
                "(adaptive; 0.0001 suits request-response traffic; the app's default: off)",
            ),
            _option(
                "--drain-timeout",
                type=float_at_least(0),
                metavar="SECONDS",
                help="on SIGINT/SIGTERM/SIGHUP, how long connections may take to flush "
                "their output before they are aborted",
            ),
            _option(
                "--proxy-protocol",
                action=_FLAG,
                help="expect a PROXY v1/v2 header on every connection "
                "(behind HAProxy, nginx, an LB), from any peer: only when nothing but "
                "the proxy can reach the port (else use --proxy-trust)",
            ),
            _option(
                "--proxy-trust",
                action="append",
                type=proxy_network,
                metavar="NET",
                help="expect a PROXY header, and only from this network or address "
                "(10.0.0.0/8, 127.0.0.1, ::1, or unix for Unix sockets); repeat for "
                "several; other peers are closed unread",
            ),
            _option(
                "--tcp-nodelay",
                action=_FLAG,
                help="send small writes at once (TCP_NODELAY; the app's default: on)",
            ),
            _option(
                "--tcp-keepalive",
                type=int_at_least(0, 32767),
                metavar="SECONDS",
                help="TCP keepalive probes after this long without traffic (a vanished "
                "peer is noticed within about twice that); 0 turns it off (the app's "
                "default: off)",
            ),
        ),
    ),
    (
        "TLS",
        (
            _option(
                "--ssl-certfile", metavar="FILE", help="the server certificate (PEM) to serve TLS"
            ),
            _option(
                "--ssl-keyfile",
                metavar="FILE",
                help="its private key (PEM), unless the certificate file holds it",
            ),
            _option(
                "--ssl-keyfile-password",
                metavar="PASSWORD",
                help="the password of an encrypted key (prefer the variable: flags show in ps)",
            ),
            _option(
                "--ssl-ca-certs",
                metavar="FILE",
                help="CA certificates (PEM) that client certificates are checked against",
            ),
            _option(
                "--ssl-cert-reqs",
                choices=("none", "optional", "required"),
                help="client certificates: not asked for, checked if sent, "
                "or required (mutual TLS)",
            ),
        ),
    ),
    (
        "logging and operations",
        (
            _option(
                "--log-level",
                type=log_level,
                metavar="LEVEL",
                help="critical, error, warning, info or debug, in any case (default info)",
            ),
            _option(
                "--log-config",
                metavar="FILE",
                help="a logging configuration: .json or .yaml/.yml (dictConfig), else ini "
                "(fileConfig)",
            ),
            _option(
                "--access-log",
                action=_FLAG,
                help="log one line per closed connection on the tcpkit.access logger",
            ),
            _option(
                "--metrics",
                type=host_port,
                metavar="HOST:PORT",
                help="serve Prometheus metrics over HTTP at /metrics (needs tcpkit[metrics])",
            ),
            _option(
                "--control",
                metavar="PATH",
                help="open an owner-only control socket at PATH (see 'tcpkit ctl')",
            ),
        ),
    ),
)


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    """Add every ``tcpkit run`` option to ``run`` (each also read from ``TCPKIT_<FLAG>``).

    Every option's parser default is ``None``: :meth:`RunConfig.from_args` then
    applies the environment and :data:`DEFAULTS`, in that order.
    """
    for title, options in _RUN_OPTIONS:
        group = run if title is None else run.add_argument_group(title)
        for option in options:
            dest = option.kwargs.get("dest") or option.names[0].lstrip("-").replace("-", "_")
            env = ENV_PREFIX + dest.upper()
            default = DEFAULTS[dest]
            shown = "" if default in (None, (), False) else f"; default {default}"
            text = f"{option.help} (env {env}{shown})"
            group.add_argument(*option.names, default=None, help=text, **option.kwargs)


def _env_value(action: argparse.Action, text: str) -> Any:
    """Convert a ``TCPKIT_*`` value as the flag itself would be converted."""
    if isinstance(action, argparse.BooleanOptionalAction):
        return _env_bool(text)
    convert: Callable[[str], Any] = action.type if callable(action.type) else str  # pyright: ignore[reportUnknownMemberType]

    def one(item: str) -> Any:
        value = convert(item.strip())
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(str, action.choices))
            raise argparse.ArgumentTypeError(f"expected one of {choices}, got {item!r}")
        return value

    if isinstance(action, argparse._AppendAction):  # pyright: ignore[reportPrivateUsage]
        return tuple(one(item) for item in text.split(",") if item.strip())
    return one(text)


def resolve(
    parser: argparse.ArgumentParser, args: argparse.Namespace, environ: Mapping[str, str]
) -> dict[str, Any]:
    """Every ``run`` setting: the flag if given, else ``TCPKIT_<FLAG>``, else the default.

    Raises:
        ConfigError: an environment variable holds a value the flag would refuse.
    """
    values: dict[str, Any] = {}
    for action in parser._actions:  # pyright: ignore[reportPrivateUsage]
        dest = action.dest
        if dest not in DEFAULTS:
            continue
        given: Any = getattr(args, dest, None)
        if given is not None:
            if isinstance(given, list):
                items: list[Any] = given  # pyright: ignore[reportUnknownVariableType]
                given = tuple(items)
            values[dest] = given
            continue
        env = ENV_PREFIX + dest.upper()
        text = environ.get(env)
        if text is not None and (text.strip() or isinstance(action, argparse._AppendAction)):  # pyright: ignore[reportPrivateUsage]
            try:
                values[dest] = _env_value(action, text)
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise ConfigError(f"{env}={text!r}: {exc}") from None
            continue
        values[dest] = DEFAULTS[dest]
    return values


@dataclass(frozen=True)
class RunConfig:
    """Everything ``tcpkit run`` was asked for (also sent to each ``--workers`` worker)."""

    app: str
    factory: bool = False
    host: tuple[str, ...] = ()
    port: int | None = None
    uds: str | None = None
    uds_mode: int | None = None
    fd: tuple[int, ...] = ()
    backlog: int = 1024
    reuse_port: bool = False
    backend: str = "asyncio"
    uvloop: bool = False
    workers: int | None = None
    max_connections: int | None = None
    idle_timeout: float | None = None
    message_timeout: float | None = None
    send_timeout: float | None = None
    max_lifetime: float | None = None
    max_connections_per_ip: int | None = None
    setup_timeout: float | None = None
    busy_poll: float | None = None
    drain_timeout: float = 30.0
    proxy_protocol: bool = False
    proxy_trust: tuple[str, ...] = ()
    tcp_nodelay: bool | None = None
    tcp_keepalive: int | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_keyfile_password: str | None = None
    ssl_ca_certs: str | None = None
    ssl_cert_reqs: str = "none"
    log_level: str | None = None
    log_config: str | None = None
    access_log: bool = False
    metrics: str | None = None
    control: str | None = None
    reload: bool = False
    reload_dir: tuple[str, ...] = ()

    @classmethod
    def from_args(
        cls,
        parser: argparse.ArgumentParser,
        args: argparse.Namespace,
        environ: Mapping[str, str] | None = None,
    ) -> RunConfig:
        """Build the settings from parsed flags and the environment.

        Raises:
            ConfigError: a bad environment value, or flags that do not go together.
        """
        values = resolve(parser, args, os.environ if environ is None else environ)
        if values["app"] is None:
            raise ConfigError(
                f"give the app to run (module:attr or file.py:attr) or {ENV_PREFIX}APP"
            )
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        """Refuse flags that do not go together.

        Raises:
            ConfigError: with the reason.
        """
        if self.uvloop and self.backend != "asyncio":
            raise ConfigError("--uvloop needs --backend asyncio")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ConfigError("--ssl-keyfile needs --ssl-certfile")
        if self.ssl_certfile is None and (
            self.ssl_ca_certs is not None or self.ssl_cert_reqs != "none"
        ):
            raise ConfigError("--ssl-ca-certs and --ssl-cert-reqs need --ssl-certfile")
        if self.ssl_cert_reqs != "none" and self.ssl_ca_certs is None:
            raise ConfigError(f"--ssl-cert-reqs {self.ssl_cert_reqs} needs --ssl-ca-certs")
        if self.reload and self.fd:
            raise ConfigError("--reload cannot be used with --fd")

    # -- derived values ------------------------------------------------------

    @property
    def backend_name(self) -> str:
        """``asyncio``, ``asyncio+uvloop`` or ``trio`` (as the startup line shows it)."""
        return "asyncio+uvloop" if self.uvloop else self.backend

    @property
    def backend_options(self) -> dict[str, Any]:
        """What ``anyio.run`` takes as ``backend_options``."""
        return {"use_uvloop": True} if self.uvloop else {}

    @property
    def listen_host(self) -> str | list[str]:
        """The ``host`` argument for binding (default ``127.0.0.1``)."""
        hosts = list(self.host)
        if not hosts:
            return "127.0.0.1"
        return hosts[0] if len(hosts) == 1 else hosts

    @property
    def listen_port(self) -> int | None:
        """The TCP port to bind: 12345 by default, none with ``--uds`` alone."""
        if self.port is not None:
            return self.port
        return None if self.uds is not None and not self.host else 12345

    @property
    def log_level_or_default(self) -> str:
        """The level to use: ``--log-level``, else ``info``."""
        return self.log_level or "info"

    def to_json(self) -> str:
        """The settings as one JSON object (see :meth:`from_json`)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        """Settings from :meth:`to_json`'s output.

        Raises:
            ValueError: ``text`` is not such a JSON object.
        """
        data: Any = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("run settings must be a JSON object")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():  # pyright: ignore[reportUnknownVariableType]
            if key in fields:
                values[key] = tuple(value) if isinstance(value, list) else value  # pyright: ignore[reportUnknownArgumentType]
        if "app" not in values:
            raise ValueError("run settings name no app")
        return cls(**values)


# -- flags -> App options: the one place ----------------------------------------


_PASSED_ON = ("max_connections", "tcp_nodelay", "busy_poll", "max_connections_per_ip")
"""Flags whose value is the App option's as it is."""

_ZERO_IS_OFF = (
    "idle_timeout",
    "message_timeout",
    "send_timeout",
    "max_lifetime",
    "setup_timeout",
    "tcp_keepalive",
)
"""Flags where 0 turns the App option off (``None``)."""


def app_overrides(config: RunConfig) -> dict[str, Any]:
    """The App options that the flags set, by App option name (``Settings.replace``'s).

    Only the options given are present.
    """
    out: dict[str, Any] = {}
    for name in _PASSED_ON:
        value = getattr(config, name)
        if value is not None:
            out[name] = value
    for name in _ZERO_IS_OFF:
        value = getattr(config, name)
        if value is not None:
            out[name] = value or None
    if config.proxy_trust:
        out["proxy_protocol"] = tuple(config.proxy_trust)  # (the allowlist wins over True)
    elif config.proxy_protocol:
        out["proxy_protocol"] = True
    return out


def load_app(config: RunConfig) -> App[Any, Any]:
    """Import the app named by the settings (calling it with ``--factory``).

    Raises:
        AppImportError: the app cannot be found, or is not an App.
        ModuleRaised: importing the user's module raised.
    """
    obj = import_from_string(config.app)
    if config.factory:
        if not callable(obj):
            raise AppImportError(f"{config.app!r} is not callable (--factory)")
        obj = obj()
    if not isinstance(obj, App):
        hint = " (use --factory for a function that returns an App)" if callable(obj) else ""
        raise AppImportError(f"{config.app!r} is not a tcpkit App but {type(obj).__name__}{hint}")
    return obj  # pyright: ignore[reportUnknownVariableType]


# -- TLS ---------------------------------------------------------------------------


def _readable(flag: str, path: str) -> None:
    if os.path.isdir(path):
        raise ConfigError(f"{flag} {path!r} is a directory, not a PEM file")
    if not os.path.exists(path):
        raise ConfigError(f"{flag}: no such file: {path!r}")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{flag}: cannot read {path!r} (permission denied)")


def _holds_private_key(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            return b"PRIVATE KEY-----" in file.read(1024 * 1024)
    except OSError:
        return True  # let load_cert_chain report it


def _explain(exc: ssl.SSLError) -> str:
    reason = str(getattr(exc, "reason", "") or "")
    text = str(exc)
    if reason == "KEY_VALUES_MISMATCH" or "key values mismatch" in text:
        return "the private key does not belong to the certificate"
    if reason in ("BAD_DECRYPT", "BAD_PASSWORD_READ") or "bad decrypt" in text:
        return "the key is encrypted: give the right --ssl-keyfile-password"
    if "PEM lib" in text or reason in ("NO_START_LINE", "PEM_LIB"):
        return "not a PEM certificate and key (or a wrong key password)"
    return text


def server_ssl_context(config: RunConfig) -> ssl.SSLContext | None:
    """The server's TLS context from the ``--ssl-*`` flags (``None`` without a certificate).

    Raises:
        ConfigError: a file is missing or unreadable, the certificate has no
            key, the key does not match or needs a password: one clear line
            naming the file.
    """
    certfile, keyfile = config.ssl_certfile, config.ssl_keyfile
    if certfile is None:
        return None
    _readable("--ssl-certfile", certfile)
    if keyfile is not None:
        _readable("--ssl-keyfile", keyfile)
    elif not _holds_private_key(certfile):
        raise ConfigError(
            f"--ssl-certfile {certfile!r} holds no private key: give its key with --ssl-keyfile"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    password = config.ssl_keyfile_password

    def no_password() -> str:  # else OpenSSL would prompt on the terminal
        raise ConfigError(
            f"the key {keyfile or certfile!r} is encrypted: give its password with "
            f"--ssl-keyfile-password or {ENV_PREFIX}SSL_KEYFILE_PASSWORD"
        )

    try:
        context.load_cert_chain(certfile, keyfile, password=password or no_password)
    except ConfigError:
        raise
    except ssl.SSLError as exc:
        files = repr(certfile) if keyfile is None else f"{certfile!r} with key {keyfile!r}"
        raise ConfigError(f"cannot load the TLS certificate {files}: {_explain(exc)}") from None
    except OSError as exc:
        raise ConfigError(f"cannot load the TLS certificate {certfile!r}: {exc}") from None
    if config.ssl_ca_certs is not None:
        _readable("--ssl-ca-certs", config.ssl_ca_certs)
        try:
            context.load_verify_locations(config.ssl_ca_certs)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"cannot load the CA certificates {config.ssl_ca_certs!r}: {exc}"
            ) from None
    context.verify_mode = {
        "none": ssl.CERT_NONE,
        "optional": ssl.CERT_OPTIONAL,
        "required": ssl.CERT_REQUIRED,
    }[config.ssl_cert_reqs]
    return context
