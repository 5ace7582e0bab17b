r"""A small Redis-protocol server that real Redis clients talk to.

It speaks RESP2, and RESP3 after ``HELLO 3``. It answers PING, ECHO, SET (with
EX/PX and NX/XX), GET, DEL, EXISTS, INCR/INCRBY/DECR/DECRBY, SELECT (16
databases), MULTI/EXEC/DISCARD, HELLO, CONFIG GET, CLIENT
SETNAME/GETNAME/SETINFO/ID, COMMAND and QUIT. Pipelining costs nothing extra:
every reply to one read goes out in one write.

The RESP codec is written here as an ordinary tcpkit codec: a sans-IO,
bounded :class:`tcpkit.codecs.Decoder` that reads both RESP arrays
(``*1\r\n$4\r\nPING\r\n``, what client libraries send) and inline
commands (``PING\r\n``, what people type into ``nc`` and what
``redis-benchmark`` uses for its ``PING_INLINE`` test).

Try it::

    tcpkit run examples/resp.py:app --port 6380
    redis-cli -p 6380 PING
    # PONG
    redis-cli -p 6380 SET greeting hello EX 60
    # OK
    redis-cli -p 6380 GET greeting
    # "hello"
    redis-benchmark -p 6380 -t ping,set,get -n 20000 -c 20 -P 16 -q
    printf 'PING\r\nECHO hi\r\n' | nc -q 1 127.0.0.1 6380
    # +PONG
    # $2
    # hi

and from Python, with redis-py::

    python -m pip install redis
    python -c "import redis; r = redis.Redis(port=6380); r.set('n', 1); print(r.incr('n'))"
    # 2

The keys live in memory for as long as the server runs, shared by all clients.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias, Union

from tcpkit import (
    App,
    Codec,
    Connection,
    EncodeError,
    FrameError,
    FrameTooLarge,
    MalformedFrame,
)
from tcpkit.codecs import NEED_DATA, Decoder, Encoder, NeedData

# -- replies -----------------------------------------------------------------


class Status(str):
    """A simple-string reply: ``+OK``."""


class RespError(str):
    """An error reply: ``-ERR message`` (the text starts with the error code)."""


Reply: TypeAlias = Union[
    bool, int, float, bytes, str, Status, RespError, "list[Reply]", "dict[str, Reply]", None
]
"""What handlers send: ``None`` is the null reply, ``bytes``/``str`` a bulk
string, ``list`` an array and ``dict`` a map (a flat array in RESP2)."""

Command: TypeAlias = "list[bytes]"
"""What handlers receive: the command name and its arguments."""

OK = Status("OK")

# -- the codec ---------------------------------------------------------------

_CRLF = b"\r\n"
_MAX_HEADER = 32  # "*<count>\r\n" and "$<length>\r\n" lines are short


class Resp(Codec[Command, Reply]):
    """RESP framing: commands in, replies out.

    Args:
        protocol: the reply dialect, 2 or 3. RESP3 has a distinct null (``_``)
            and native maps (``%``), booleans and doubles.
        max_bulk: the longest bulk string accepted, in bytes.
        max_args: the most elements accepted in one command array.
        max_inline: the longest inline command accepted, in bytes.
        max_command: the most bytes accepted for one whole command.

    A command over any limit raises :class:`~tcpkit.FrameTooLarge` as soon as
    its header says so; a command that breaks the grammar raises
    :class:`~tcpkit.MalformedFrame`. Either way the buffer never holds more
    than one command plus the rest of one read.
    """

    def __init__(
        self,
        protocol: int = 2,
        *,
        max_bulk: int = 8 * 1024 * 1024,
        max_args: int = 1024 * 1024,
        max_inline: int = 64 * 1024,
        max_command: int = 64 * 1024 * 1024,
    ) -> None:
        if protocol not in (2, 3):
            raise ValueError("protocol must be 2 or 3")
        self.protocol = protocol
        self.max_bulk = max_bulk
        self.max_args = max_args
        self.max_inline = max_inline
        self.max_command = max_command

    def decoder(self) -> Decoder[Command]:
        return RespDecoder(self.max_bulk, self.max_args, self.max_inline, self.max_command)

    def encoder(self) -> Encoder[Reply]:
        return RespEncoder(self.protocol)

    def __repr__(self) -> str:
        return f"Resp(protocol={self.protocol})"


class RespDecoder(Decoder[Command]):
    """Incremental RESP command decoder; resumes where the last call stopped.

    While an array is incomplete, the bytes from the start of the command are
    kept (so :meth:`take_pending` can hand them all to another codec) and the
    positions of its bulk strings are remembered, so nothing is parsed twice.
    """

    __slots__ = (
        "_buf",
        "_bulk",
        "_max_args",
        "_max_bulk",
        "_max_command",
        "_max_inline",
        "_pos",
        "_remaining",
        "_scan",
        "_spans",
        "_start",
    )

    def __init__(self, max_bulk: int, max_args: int, max_inline: int, max_command: int) -> None:
        self._max_bulk = max_bulk
        self._max_args = max_args
        self._max_inline = max_inline
        self._max_command = max_command
        self._buf = bytearray()
        self._start = 0  # where the command being decoded begins
        self._pos = 0  # the next byte to parse
        self._scan = 0  # where the search for the next LF resumes
        self._spans: list[tuple[int, int]] | None = None  # bulk positions of an array
        self._remaining = 0  # bulk strings still expected in the array
        self._bulk = -1  # the announced length of the next bulk string, -1 if unknown

    def push(self, data: bytes) -> None:
        if self._start:
            # Drop what was decoded; positions are relative to the command start.
            shift = self._start
            del self._buf[:shift]
            self._start = 0
            self._pos -= shift
            self._scan -= shift
            if self._spans is not None:
                self._spans = [(a - shift, b - shift) for a, b in self._spans]
        self._buf += data

    def take_pending(self) -> bytes:
        pending = bytes(self._buf[self._start :])
        self._buf = bytearray()
        self._start = self._pos = self._scan = 0
        self._spans = None
        self._bulk = -1
        return pending

    def _line(self, limit: int, what: str) -> bytes | NeedData:
        """The next CRLF-terminated line (without CRLF) from ``_pos``, or NEED_DATA."""
        buf = self._buf
        end = buf.find(b"\n", max(self._scan, self._pos))
        if end < 0:
            self._scan = len(buf)
            if len(buf) - self._pos > limit + 1:
                raise self._too_large(len(buf) - self._pos, limit, what)
            return NEED_DATA
        if end - self._pos > limit + 1:
            raise self._too_large(end - self._pos, limit, what)
        line = bytes(buf[self._pos : end])
        self._pos = self._scan = end + 1
        return line[:-1] if line.endswith(b"\r") else line

    def _too_large(self, size: int, limit: int, what: str) -> FrameTooLarge:
        self.take_pending()  # the rest of this command cannot be framed: drop it
        return FrameTooLarge(size, limit, what)

    def _malformed(self, message: str) -> MalformedFrame:
        self.take_pending()
        return MalformedFrame(f"Protocol error: {message}")

    def _number(self, line: bytes, prefix: str) -> int:
        try:
            return int(line[1:])
        except ValueError:
            raise self._malformed(f"invalid {prefix} count {line[1:]!r}") from None

    def next_message(self) -> Command | NeedData:
        while True:
            if self._spans is None:
                if self._pos >= len(self._buf):
                    return NEED_DATA
                if self._buf[self._pos] != ord("*"):
                    command = self._inline()
                    if command is None:
                        continue  # an empty line: ignored, as Redis does
                    return command
                line = self._line(_MAX_HEADER, "multibulk header")
                if line is NEED_DATA:
                    return NEED_DATA
                count = self._number(line, "multibulk")
                if count > self._max_args:
                    raise self._too_large(count, self._max_args, "array of elements")
                if count <= 0:
                    self._start = self._pos  # "*0" and "*-1" carry no command
                    continue
                self._spans = []
                self._remaining = count
                self._bulk = -1
            command = self._array()
            if command is NEED_DATA:
                return NEED_DATA
            return command

    def _inline(self) -> Command | NeedData | None:
        line = self._line(self._max_inline, "inline command")
        if line is NEED_DATA:
            return NEED_DATA
        self._start = self._pos
        parts = line.split()
        return parts or None

    def _array(self) -> Command | NeedData:
        spans = self._spans
        assert spans is not None
        buf = self._buf
        while self._remaining:
            if self._bulk < 0:
                line = self._line(_MAX_HEADER, "bulk header")
                if line is NEED_DATA:
                    return NEED_DATA
                if not line.startswith(b"$"):
                    raise self._malformed(f"expected '$', got {line[:1].decode('latin-1')!r}")
                size = self._number(line, "bulk")
                if size < 0:
                    raise self._malformed(f"invalid bulk length {size}")
                if size > self._max_bulk:
                    raise self._too_large(size, self._max_bulk, "bulk string")
                if self._pos - self._start + size > self._max_command:
                    raise self._too_large(
                        self._pos - self._start + size, self._max_command, "command"
                    )
                self._bulk = size
            end = self._pos + self._bulk
            if len(buf) < end + 2:
                return NEED_DATA
            if not buf.startswith(_CRLF, end):
                raise self._malformed("bulk string not followed by CRLF")
            spans.append((self._pos, end))
            self._pos = self._scan = end + 2
            self._bulk = -1
            self._remaining -= 1
        command = [bytes(buf[a:b]) for a, b in spans]
        self._spans = None
        self._start = self._pos
        return command


class RespEncoder(Encoder[Reply]):
    """Encodes replies in RESP2 or RESP3."""

    __slots__ = ("_resp3",)

    def __init__(self, protocol: int) -> None:
        self._resp3 = protocol == 3

    def encode(self, message: Reply) -> bytes:
        out: list[bytes] = []
        self._encode(message, out)
        return b"".join(out)

    def _encode(self, value: Reply, out: list[bytes]) -> None:
        # Subclasses of str first: Status and RespError are str too.
        if isinstance(value, Status):
            out.append(b"+%s\r\n" % _one_line(value).encode())
        elif isinstance(value, RespError):
            out.append(b"-%s\r\n" % _one_line(value).encode())
        elif isinstance(value, (bytes, str)):
            data = value.encode() if isinstance(value, str) else value
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        elif value is None:
            out.append(b"_\r\n" if self._resp3 else b"$-1\r\n")
        elif isinstance(value, bool):
            if self._resp3:
                out.append(b"#t\r\n" if value else b"#f\r\n")
            else:
                out.append(b":1\r\n" if value else b":0\r\n")
        elif isinstance(value, int):
            out.append(b":%d\r\n" % value)
        elif isinstance(value, float):
            text = repr(value).encode()
            out.append(b",%s\r\n" % text if self._resp3 else b"$%d\r\n%s\r\n" % (len(text), text))
        elif isinstance(value, list):
            out.append(b"*%d\r\n" % len(value))
            for item in value:
                self._encode(item, out)
        elif isinstance(value, dict):  # pyright: ignore[reportUnnecessaryIsInstance]
            count = len(value)
            out.append(b"%%%d\r\n" % count if self._resp3 else b"*%d\r\n" % (2 * count))
            for key, item in value.items():
                self._encode(key, out)
                self._encode(item, out)
        else:
            raise EncodeError(f"RESP cannot encode {type(value).__name__}")


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


# -- the keyspace ----------------------------------------------------------------


@dataclass
class Entry:
    value: bytes
    expires: float | None = None  # time.monotonic() deadline


@dataclass
class Store:
    """Every database of one server, shared by its connections."""

    databases: list[dict[bytes, Entry]] = field(default_factory=lambda: [{} for _ in range(16)])

    def get(self, db: int, key: bytes) -> Entry | None:
        entry = self.databases[db].get(key)
        if entry is not None and entry.expires is not None and entry.expires <= time.monotonic():
            del self.databases[db][key]
            return None
        return entry


@dataclass
class Client:
    """Per-connection state (``conn.state``)."""

    db: int = 0
    name: bytes | None = None
    protocol: int = 2
    queued: list[Command] | None = None  # the commands of an open MULTI
    queue_failed: bool = False  # a command was refused while queueing


CONFIG = {
    "save": "",
    "appendonly": "no",
    "databases": "16",
    "maxmemory": "0",
}
"""What ``CONFIG GET`` reports (``redis-benchmark`` asks for ``save`` and ``appendonly``)."""

Conn: TypeAlias = "Connection[Command, Reply]"
CommandFunc: TypeAlias = Callable[[Conn, Store, list[bytes]], Reply]


def _int(arg: bytes) -> int:
    try:
        return int(arg)
    except ValueError:
        raise CommandError("ERR value is not an integer or out of range") from None


class CommandError(Exception):
    """Raised by a command to answer with an error reply."""


def ping(conn: Conn, store: Store, args: list[bytes]) -> Reply:
    if len(args) > 1:
        raise CommandError("ERR wrong number of arguments for 'ping' command")
    return args[0] if args else Status("PONG")


def echo(conn: Conn, store: Store, args: list[bytes]) -> Reply:
    _arity(args, 1, "echo")
    return args[0]


def set_(conn: Conn, store: Store, args: list[bytes]) -> Reply:
    if len(args) < 2:
        raise CommandError("ERR wrong number of arguments for 'set' command")
    key, value, options = args[0], args[1], [a.upper() for a in args[2:]]
    expires: float | None = None
    condition: bytes | None = None
    i = 0
    while i < len(options):
        option = options[i]
        if option in (b"EX", b"PX") and i + 1 < len(options) and expires is None:
            amount = _int(args[2 + i + 1])
            if amount <= 0:
                raise CommandError("ERR invalid expire time in 'set' command")
            expires = time.monotonic() + (amount if option == b"EX" else amount / 1000)
            i += 2
        elif option in (b"NX", b"XX") and condition is None:
            condition = option
            i += 1
        else:
            raise CommandError("ERR syntax error")
    db = conn.state.db
    exists = store.get(db, key) is not None
    if (condition == b"NX" and exists) or (condition == b"XX" and not exists):
        return None
    store.databases[db][key] = Entry(value, expires)
    return OK


def get(conn: Conn, store: Store, args: list[bytes]) -> Reply:
    _arity(args, 1, "get")
    entry = store.get(conn.state.db, args[0])
    return None if entry is None else entry.value


def delete(conn: Conn, store: Store, args: list[bytes]) -> Reply:
    if not args:
        raise CommandError("ERR wrong number of arguments for 'del' command")
    db = conn.state.db
    removed = 0
    for key in args:
        if store.get(db, key) is not None:
            del store.databases[db][key]
            removed += 1
    return removed


def exists(conn: Conn, store: Store, args: list[bytes]) -> Reply:
    if not args:
        raise CommandError("ERR wrong number of arguments for 'exists' command")
    return sum(store.get(conn.state.db, key) is not None for key in args)


def _add(conn: Conn, store: Store, key: bytes, amount: int) -> int:
    db = conn.state.db
    entry = store.get(db, key)
    number = _int(entry.value) if entry is not None else 0
    number += amount
    if not -(2**63) <= number < 2**63:
        raise CommandError("ERR increment or decrement would overflow")
    if entry is None:
        store.databases[db][key] = Entry(b"%d" % number)
    else:
        entry.value = b"%d" % number  # the key keeps its time to live
    return number


def incr(conn: Conn, store: Store, args: list[bytes]) -> Reply:
    _arity(args, 1, "incr")
    return _add(conn, store, args[0], 1)


def incrby(conn: Conn, store: Store, args: list[bytes]) -> Reply:
    _arity(args, 2, "incrby")
    return _add(conn, store, args[0], _int(args[1]))


def decr(conn: Conn, store: Store, args: list[bytes]) -> Reply:
    _arity(args, 1, "decr")
    return _add(conn, store, args[0], -1)


def decrby(conn: Conn, store: Store, args: list[bytes]) -> Reply:
    _arity(args, 2, "decrby")
    return _add(conn, store, args[0], -_int(args[1]))


def select(conn: Conn, store: Store, args: list[bytes]) -> Reply:
    _arity(args, 1, "select")
    index = _int(args[0])
    if not 0 <= index < len(store.databases):
        raise CommandError("ERR DB index is out of range")
    conn.state.db = index
    return OK


def hello(conn: Conn, store: Store, args: list[bytes]) -> Reply:
    """HELLO [protover [AUTH username password] [SETNAME clientname]].

    ``HELLO 3`` switches this connection's replies to RESP3, by giving it a
    new output codec; the HELLO reply itself is already in RESP3. AUTH is
    accepted and ignored: this server has no passwords.
    """
    client: Client = conn.state
    protocol = client.protocol
    if args:
        try:
            protocol = int(args[0])
        except ValueError:
            raise CommandError("ERR Protocol version is not an integer or out of range") from None
        if protocol not in (2, 3):
            raise CommandError("NOPROTO unsupported protocol version")
    i = 1
    while i < len(args):
        option = args[i].upper()
        if option == b"AUTH" and i + 2 < len(args):
            i += 3
        elif option == b"SETNAME" and i + 1 < len(args):
            client.name = args[i + 1]
            i += 2
        else:
            raise CommandError(f"ERR Syntax error in HELLO option {option.decode('latin-1')!r}")
    if protocol != client.protocol:
        client.protocol = protocol
        conn.set_output_codec(Resp(protocol))
    return {
        "server": "redis",
        "version": "7.0.0",
        "proto": protocol,
        "id": conn.id,
        "mode": "standalone",
        "role": "master",
        "modules": [],
    }


def config(conn: Conn, store: Store, args: list[bytes]) -> Reply:
    if not args or args[0].upper() != b"GET" or len(args) < 2:
        raise CommandError("ERR only CONFIG GET <pattern> [<pattern> ...] is supported")
    found: dict[str, Reply] = {}
    settings = {**CONFIG, "port": str(conn.server.port or 0)}
    for pattern in args[1:]:
        text = pattern.decode("utf-8", "replace").lower()
        for name, value in settings.items():
            if fnmatch.fnmatchcase(name, text):
                found[name] = value
    return found


def client(conn: Conn, store: Store, args: list[bytes]) -> Reply:
    sub = args[0].upper() if args else b""
    state: Client = conn.state
    if sub == b"SETNAME" and len(args) == 2:
        state.name = args[1] or None
        return OK
    if sub == b"GETNAME" and len(args) == 1:
        return state.name
    if sub == b"SETINFO" and len(args) == 3:
        return OK
    if sub == b"ID" and len(args) == 1:
        return conn.id
    name = sub.decode("latin-1")
    raise CommandError(f"ERR unknown subcommand or wrong number of arguments for '{name}'")


def command(conn: Conn, store: Store, args: list[bytes]) -> Reply:
    # No command table: redis-cli then falls back to its built-in help.
    return []


def _arity(args: list[bytes], count: int, name: str) -> None:
    if len(args) != count:
        raise CommandError(f"ERR wrong number of arguments for '{name}' command")


COMMANDS: dict[bytes, CommandFunc] = {
    b"PING": ping,
    b"ECHO": echo,
    b"SET": set_,
    b"GET": get,
    b"DEL": delete,
    b"EXISTS": exists,
    b"INCR": incr,
    b"INCRBY": incrby,
    b"DECR": decr,
    b"DECRBY": decrby,
    b"SELECT": select,
    b"HELLO": hello,
    b"CONFIG": config,
    b"CLIENT": client,
    b"COMMAND": command,
}


def run(conn: Conn, store: Store, cmd: Command) -> Reply:
    """Execute one command and return its reply (an error reply on failure)."""
    func = COMMANDS.get(cmd[0].upper())
    if func is None:
        return _unknown(cmd)
    try:
        return func(conn, store, cmd[1:])
    except CommandError as exc:
        return RespError(str(exc))


def _unknown(cmd: Command) -> RespError:
    name = cmd[0].decode("utf-8", "replace")
    shown = " ".join(f"'{a.decode('utf-8', 'replace')}'" for a in cmd[1:4])
    return RespError(f"ERR unknown command '{name}', with args beginning with: {shown}")


def transaction(conn: Conn, store: Store, name: bytes, cmd: Command) -> Reply:
    """MULTI, EXEC and DISCARD; any other command inside MULTI is queued.

    EXEC runs the queued commands back to back: the handlers never await, so
    no other client's command can run in between (the atomicity Redis
    promises).
    """
    state: Client = conn.state
    if name == b"MULTI":
        if state.queued is not None:
            return RespError("ERR MULTI calls can not be nested")
        state.queued, state.queue_failed = [], False
        return OK
    if name in (b"EXEC", b"DISCARD"):
        queued, failed = state.queued, state.queue_failed
        state.queued, state.queue_failed = None, False
        if queued is None:
            return RespError(f"ERR {name.decode()} without MULTI")
        if name == b"DISCARD":
            return OK
        if failed:
            return RespError("EXECABORT Transaction discarded because of previous errors.")
        return [run(conn, store, queued_cmd) for queued_cmd in queued]
    assert state.queued is not None
    if name not in COMMANDS:
        state.queue_failed = True
        return _unknown(cmd)
    state.queued.append(cmd)
    return Status("QUEUED")


_TRANSACTION = frozenset({b"MULTI", b"EXEC", b"DISCARD"})


def make_app() -> App[Command, Reply]:
    """A fresh app with its own keyspace (the tests make one per server)."""
    store = Store()
    app = App(codec=Resp(), name="resp", state=Client)

    @app.on_input
    def execute(conn: Conn, cmd: Command) -> None:
        name = cmd[0].upper()
        if name == b"QUIT":
            conn.put(OK)
            conn.shutdown()  # a graceful shutdown: the OK is still delivered
        elif name in _TRANSACTION or conn.state.queued is not None:
            conn.put(transaction(conn, store, name, cmd))
        else:
            conn.put(run(conn, store, cmd))

    @app.on_error
    def protocol_error(conn: Conn, exc: Exception) -> None:
        # Redis answers a protocol error, then closes the connection
        # (shutdown_on_error, the default, does the closing after this returns).
        if isinstance(exc, FrameError) and not conn.shutting_down:
            conn.put(RespError(f"ERR {exc}"))

    return app


app = make_app()

if __name__ == "__main__":
    app.run(port=6380)
