"""Run the shell commands that the docs and the examples' docstrings tell readers to copy.

A *script* is one source read top to bottom: an example's module docstring
(its ``::`` literal blocks) or a Markdown page (its ``sh``, ``bash``,
``shell`` and ``console`` code blocks). Its commands run in order, with
``bash -c``, in a fresh directory holding a copy of ``examples/``, with the
tcpkit under test first on ``PATH``.

What a block says, and how the runner reads it:

- In ``sh`` blocks and docstrings, every line is a command (a line ending in
  ``\\`` continues on the next), and ``# ...`` lines right after a command
  are its expected output, line for line. In ``console`` blocks, ``$ ``
  lines are commands and the lines after one are its output.
- A command that starts a server (``tcpkit run ...``, ``python FILE.py``,
  with or without a trailing ``&``) runs in the background until the next
  server command, and the commands after it talk to it. Server commands in a
  row in one block are alternatives ("run it with the CLI or as a script"):
  the client commands after them run against each one in turn.
- A client that reads the terminal (``nc HOST PORT``, ``socat - TCP:...``,
  ``openssl s_client``, with nothing piped in) is a person typing: the
  runner types the line that :data:`PROBES` gives for the server, waits for
  the answer, then presses Ctrl-C.
- ``python -m pip install ...`` runs only where the runner owns the
  environment (a fresh venv), never in the development venv; ``make ...``
  (the developer set-up: ``make test`` is this test suite) is never run.
- Ports: the port a server command names (``--port N``; ``tcpkit run``
  without one listens on 12345, the default; ``app.run(port=N)`` in the file
  a ``python FILE.py`` runs) is moved to a free port, in every command of the
  script and in the copied files. Nothing else in a command is changed.

Markers, in a Markdown page, are HTML comments on the line before a block
(they do not show on the site):

- ``<!-- commands: example NAME -->``: the block talks to
  ``examples/NAME.py``, started the way its docstring starts it;
- ``<!-- commands: skip REASON -->``: the block is not run (an address of
  the reader's own, a command that never ends...), and the report says why;
- ``<!-- commands: file NAME -->`` before a ``python`` block: the block is
  saved as NAME in the working directory ("save this as hello.py").

A command fails the test if it exits non-zero, prints something other than
its documented output, or (a terminal client) never gets the probe's answer;
a server fails it if it does not listen, dies early, or logs a traceback. A
script whose commands need a program that is not installed is skipped, and
the reason names the program.
"""

from __future__ import annotations

import ast
import os
import pty
import re
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DEFAULT_PORT = 12345  # what `tcpkit run` listens on without --port

# What a person types into a terminal client, per server (the example's or
# the file's stem), and the text that must come back before Ctrl-C.
PROBES: dict[str, tuple[str, tuple[str, ...]]] = {
    "echo": ("hello", ("hello",)),
    "rot13": ("Hello, world", ("Smile from the server!", "Uryyb, jbeyq")),
    "chat": ("/who", ("* Welcome, guest", "* 1 connected: guest")),
    "limited": ("status", ("hello, client 1 of at most 2", "connections 1, limit at most 2")),
    "json_rpc": (
        '{"jsonrpc":"2.0","id":7,"method":"upper","params":["hi"]}',
        ('{"jsonrpc":"2.0","id":7,"result":"HI"}',),
    ),
    "tls_echo": ("ping", ("hello over TLSv1.3", "ping")),
    "hello": ("hi", ("Hello, 127.0.0.1! Type something; 'bye' to leave.", "You said: hi")),
}

SHELL_LANGS = {"sh", "bash", "shell", "console"}
MARKER = re.compile(r"^<!--\s*commands:\s*(?P<kind>example|skip|file)\s+(?P<arg>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<fence>```+)\s*(?P<lang>[\w-]*)[^\n]*$")
SNIPPET = re.compile(r"^--8<--\s*\n(?P<path>[^\n]+)\n--8<--\s*$", re.M)
TERMINAL_CLIENT = re.compile(r"^(nc\s|socat\s+-\s|openssl\s+s_client\s)")
SERVER = re.compile(r"^(tcpkit\s+run\s|python\s+-m\s+tcpkit\s+run\s|python3?\s+[\w./-]+\.py\b)")
PIP_INSTALL = re.compile(r"^python3?\s+-m\s+pip\s+install\s")
MAKE = re.compile(r"^make(\s|$)")
STEP_TIMEOUT = 60.0


@dataclass
class Command:
    text: str  # as written, continuation lines included; a trailing `&` removed
    where: str  # file:line
    expected: list[str] | None = None  # documented output, line for line
    block: int = 0  # which code block of the script it is in

    @property
    def kind(self) -> str:
        if SERVER.match(self.text):
            return "server"
        if PIP_INSTALL.match(self.text):
            return "install"
        if MAKE.match(self.text):
            return "make"
        if TERMINAL_CLIENT.match(self.text) and not _redirected(self.text):
            return "terminal"
        return "client"


@dataclass
class SaveFile:
    name: str
    content: str
    where: str


@dataclass
class Skipped:
    reason: str
    commands: list[str]
    where: str


@dataclass
class Script:
    name: str  # examples/echo.py, docs/getting-started.md
    steps: list[Command | SaveFile | Skipped] = field(default_factory=list)

    @property
    def commands(self) -> list[Command]:
        return [s for s in self.steps if isinstance(s, Command)]

    @property
    def skipped(self) -> list[Skipped]:
        return [s for s in self.steps if isinstance(s, Skipped)]


def _redirected(text: str) -> bool:
    """True if the command's input or output is not the terminal (a pipe or a redirection)."""
    return any(tok in ("|", "|&", "<", "<<", "<<<", ">", ">>") for tok in _tokens(text))


def _tokens(text: str) -> list[str]:
    lexer = shlex.shlex(text.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def programs(text: str) -> list[str]:
    """The programs a command line runs: the first word of each pipeline stage."""
    found: list[str] = []
    expect = True
    for tok in _tokens(text):
        if tok in ("|", "||", "&&", ";", "&", "|&"):
            expect = True
        elif expect and not re.match(r"^\w+=", tok):
            found.append(tok)
            expect = False
    return found


def _command_lines(
    lines: list[tuple[int, str]], path: str, *, console: bool, block: int
) -> list[Command]:
    """Commands (with continuations) and their expected output from a block's lines."""
    commands: list[Command] = []
    current: Command | None = None  # the command whose output lines may follow
    i = 0
    while i < len(lines):
        number, line = lines[i]
        i += 1
        stripped = line.strip()
        if console:
            if not stripped.startswith("$ "):
                if current is not None and stripped:
                    current.expected = [*(current.expected or []), line.rstrip()]
                continue
            stripped = stripped[2:]
        elif not stripped:
            current = None
            continue
        elif stripped.startswith("#"):
            if current is not None:  # "# " and the output line, verbatim
                current.expected = [*(current.expected or []), stripped[2:]]
            continue
        parts = [stripped]
        while parts[-1].endswith("\\") and i < len(lines):
            parts.append(lines[i][1].strip())
            i += 1
        text = "\n".join(parts)
        text = re.sub(r"\s*&\s*$", "", text) if text.rstrip().endswith("&") else text
        current = Command(text, f"{path}:{number}", block=block)
        commands.append(current)
    return commands


def docstring_script(path: Path) -> Script:
    """The commands of an example's docstring: every ``::`` literal block."""
    rel = path.relative_to(ROOT).as_posix()
    doc = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
    first_line = 2  # the docstring starts on line 1, after the quotes
    script = Script(rel)
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].rstrip().endswith("::"):
            i += 1
            block: list[tuple[int, str]] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                block.append((first_line + i - 1, lines[i]))
                i += 1
            script.steps += _command_lines(block, rel, console=False, block=first_line + i)
        else:
            i += 1
    return script


def page_script(path: Path) -> Script:
    """The commands of a Markdown page, with its ``<!-- commands: ... -->`` markers."""
    rel = path.relative_to(ROOT).as_posix()
    script = Script(rel)
    lines = path.read_text().splitlines()
    marker: tuple[str, str] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        found = MARKER.match(line.strip())
        if found:
            marker = (found["kind"], found["arg"])
            i += 1
            continue
        fence = FENCE.match(line.strip())
        if not fence:
            if line.strip():
                marker = None  # a marker applies to the block right after it
            i += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        start = i + 1
        i += 1
        while i < len(lines) and lines[i].strip() != fence["fence"]:
            i += 1
        body = [(n + 1, lines[n].removeprefix(indent)) for n in range(start, i)]
        i += 1
        lang = fence["lang"]
        where = f"{rel}:{start}"
        if marker is not None and marker[0] == "file":
            content = "\n".join(text for _, text in body) + "\n"
            for snippet in SNIPPET.finditer(content):
                content = content.replace(snippet[0], (ROOT / snippet["path"]).read_text())
            script.steps.append(SaveFile(marker[1], content.rstrip("\n") + "\n", where))
        elif lang in SHELL_LANGS:
            commands = _command_lines(body, rel, console=lang == "console", block=start)
            if marker is not None and marker[0] == "skip":
                script.steps.append(Skipped(marker[1], [c.text for c in commands], where))
            else:
                if marker is not None and marker[0] == "example":
                    server = example_server(marker[1])
                    script.steps.append(Command(server.text, f"{where} (marker)", block=start))
                script.steps += commands
        marker = None
    return script


def example_server(name: str) -> Command:
    """The first server command of ``examples/NAME.py``'s docstring."""
    script = docstring_script(EXAMPLES / f"{name}.py")
    for command in script.commands:
        if command.kind == "server":
            return command
    raise AssertionError(f"examples/{name}.py's docstring starts no server")


# -- running ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def socket_states(port: int) -> list[str]:
    """The TCP states of the sockets bound to PORT (from /proc/net/tcp*, no connection made)."""
    states: list[str] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                states.append(fields[3])
    return states


def listening(port: int) -> bool:
    """True if a socket listens on PORT."""
    return "0A" in socket_states(port)


def wait_until_clients_left(port: int) -> None:
    """Wait until the server on PORT has closed every client's socket.

    (Established, or half-closed by the client and not closed yet: the
    server still counts that connection, as in ``server.connections``.)
    """
    deadline = time.monotonic() + STEP_TIMEOUT
    while any(state in ("01", "08") for state in socket_states(port)):
        assert time.monotonic() < deadline, f"the server on {port} kept a client's socket open"
        time.sleep(0.01)


@dataclass
class Server:
    command: Command
    name: str  # the probe key: the example's or the file's stem
    proc: subprocess.Popen[bytes]
    log: Path
    port: int


class Runner:
    """Runs one script's commands in ``workdir`` with ``env``."""

    def __init__(
        self, script: Script, workdir: Path, env: Mapping[str, str], *, may_install: bool
    ) -> None:
        self.script = script
        self.workdir = workdir
        self.env = dict(env)
        self.may_install = may_install
        self.ports: dict[int, int] = {}
        self.ran: list[str] = []  # what was run, for the report
        self.not_run: list[str] = []

    # -- set-up --------------------------------------------------------------

    def missing_programs(self) -> list[str]:
        path = self.env.get("PATH", "")
        builtins = {"cd", "echo", "printf", "export", "test", "["}
        missing = []
        for command in self.script.commands:
            for prog in programs(command.text):
                if prog in builtins or "/" in prog:
                    continue
                if shutil.which(prog, path=path) is None and prog not in missing:
                    missing.append(prog)
        return missing

    def prepare(self) -> None:
        shutil.copytree(EXAMPLES, self.workdir / "examples", ignore=_ignore_caches)
        for command in self.script.commands:
            if command.kind == "server":
                doc_port = self._server_port(command)
                self.ports.setdefault(doc_port, free_port())

    def _server_port(self, command: Command) -> int:
        words = _tokens(command.text)
        if words[0].startswith("python") and words[1] != "-m":
            source = self._file_source(words[1])
            found = re.search(r"\.run\([^)]*\bport=(\d+)", source)
            assert found, f"{command.where}: {words[1]} calls no app.run(port=...)"
            return int(found[1])
        if "--port" in words:
            return int(words[words.index("--port") + 1])
        assert "--uds" not in words, f"{command.where}: a Unix socket server is not supported"
        return DEFAULT_PORT

    def _file_source(self, name: str) -> str:
        for step in self.script.steps:
            if isinstance(step, SaveFile) and step.name == name:
                return step.content
        return (ROOT / name).read_text()

    def _moved(self, text: str) -> str:
        for doc_port, port in self.ports.items():
            text = re.sub(rf"\b{doc_port}\b", str(port), text)
        return text

    # -- the run ---------------------------------------------------------------

    def run(self) -> None:
        self.prepare()
        servers: list[Command] = []
        clients: list[Command] = []
        for step in self.script.steps:
            if isinstance(step, Skipped):
                self.not_run += [f"{c}    ({step.where}: {step.reason})" for c in step.commands]
            elif isinstance(step, SaveFile):
                self._flush(servers, clients)
                servers, clients = [], []
                (self.workdir / step.name).write_text(self._moved(step.content))
            elif step.kind == "server":
                if clients or (servers and servers[-1].block != step.block):
                    self._flush(servers, clients)
                    servers, clients = [], []
                servers.append(step)
            elif step.kind == "install" and not self.may_install:
                self.not_run.append(f"{step.text}    (changes the development venv)")
            elif step.kind == "make":
                self.not_run.append(f"{step.text}    (developer set-up: make test is this suite)")
            else:
                clients.append(step)
        self._flush(servers, clients)

    def _flush(self, servers: list[Command], clients: list[Command]) -> None:
        if not servers:
            for client in clients:
                self._client(client, None)
            return
        for command in servers:
            with self._server(command) as server:
                for client in clients:
                    self._client(client, server)

    def _server(self, command: Command) -> _ServerContext:
        return _ServerContext(self, command)

    def _start(self, command: Command) -> Server:
        doc_port = self._server_port(command)
        port = self.ports[doc_port]
        text = self._moved(command.text)
        words = _tokens(command.text)
        if words[0] != "python" or words[1] == "-m":
            if "--port" not in words:  # before a trailing comment, if any
                text = re.sub(r"(\s+#[^\n'\"]*)?$", rf" --port {port}\1", text, count=1)
            name = Path(re.split(r"[:]", words[words.index("run") + 1])[0]).stem
        else:
            name = Path(words[1]).stem
        for path in self.workdir.rglob("*.py"):  # app.run(port=N) in the copied files
            source = path.read_text()
            moved = re.sub(rf"\bport={doc_port}\b", f"port={port}", source)
            if moved != source:
                path.write_text(moved)
        log = self.workdir / f"server-{len(self.ran)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", text],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.ran.append(text)
        server = Server(command, name, proc, log, port)
        deadline = time.monotonic() + 30
        while not listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                raise AssertionError(
                    f"{command.where}: `{text}` did not listen on {port}:\n{log.read_text()}"
                )
            try:  # returns at once if the server dies
                proc.wait(timeout=0.02)
            except subprocess.TimeoutExpired:
                pass
        return server

    def _stop_server(self, server: Server) -> None:
        where, text = server.command.where, server.command.text
        if server.proc.poll() is not None:
            raise AssertionError(
                f"{where}: the server `{text}` died before Ctrl-C:\n{server.log.read_text()}"
            )
        _stop(server.proc)
        log = server.log.read_text()
        assert "Traceback" not in log, f"{where}: the server `{text}` logged:\n{log}"

    def _client(self, command: Command, server: Server | None) -> None:
        text = self._moved(command.text)
        self.ran.append(text)
        if command.kind == "terminal":
            assert server is not None, f"{command.where}: `{text}` has no server to talk to"
            self._terminal(command, text, server)
            return
        code, stdout, stderr = self._in_terminal(command, text)
        assert code == 0, (
            f"{command.where}: `{text}` exited {code}\nstdout: {stdout}\nstderr: {stderr}"
        )
        if command.expected is not None:
            got = [line.rstrip() for line in stdout.replace("\r\n", "\n").rstrip("\n").split("\n")]
            want = [self._moved(line) for line in command.expected]
            assert got == want, f"{command.where}: `{text}` printed {got}, the docs say {want}"

    def _in_terminal(self, command: Command, text: str) -> tuple[int, str, str]:
        """Run TEXT with its output on a terminal, as a reader would (tools format for one)."""
        master, slave = pty.openpty()
        proc = subprocess.Popen(
            ["bash", "-c", text],
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        os.close(slave)
        assert proc.stderr is not None
        out, err = bytearray(), bytearray()
        streams = {master: out, proc.stderr.fileno(): err}
        deadline = time.monotonic() + STEP_TIMEOUT
        with selectors.DefaultSelector() as sel:
            for fd in streams:
                sel.register(fd, selectors.EVENT_READ)
            while sel.get_map():
                left = deadline - time.monotonic()
                ready = sel.select(timeout=left) if left > 0 else []
                if not ready:
                    _stop(proc)
                    os.close(master)
                    raise AssertionError(f"{command.where}: `{text}` did not end")
                for key, _ in ready:
                    try:
                        chunk = os.read(key.fd, 65536)
                    except OSError:  # EIO: the terminal's last writer is gone
                        chunk = b""
                    if chunk:
                        streams[key.fd] += chunk
                    else:
                        sel.unregister(key.fd)
        os.close(master)
        proc.stderr.close()
        code = proc.wait(timeout=STEP_TIMEOUT)
        return code, out.decode(errors="replace"), err.decode(errors="replace")

    def _terminal(self, command: Command, text: str, server: Server) -> None:
        assert server.name in PROBES, f"{command.where}: add a probe for {server.name!r}"
        typed, answers = PROBES[server.name]
        # One terminal at a time: the last one's client was stopped, and the server may
        # not have closed its socket yet (a greeting counts the clients connected).
        wait_until_clients_left(server.port)
        proc = subprocess.Popen(
            ["bash", "-c", text],
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(typed.encode() + b"\n")
        proc.stdin.flush()
        seen = b""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + 20
            while not all(a.encode() in seen for a in answers):
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(timeout=left):
                    break
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                seen += chunk
        _stop(proc)  # Ctrl-C, as the person would
        proc.stdin.close()
        proc.stdout.close()
        missing = [a for a in answers if a.encode() not in seen]
        assert not missing, (
            f"{command.where}: typed {typed!r} into `{text}`, never saw {missing}; got {seen!r}"
        )


class _ServerContext:
    def __init__(self, runner: Runner, command: Command) -> None:
        self.runner = runner
        self.command = command
        self.server: Server | None = None

    def __enter__(self) -> Server:
        self.server = self.runner._start(self.command)
        return self.server

    def __exit__(self, exc_type: object, *_: object) -> None:
        assert self.server is not None
        if exc_type is None:
            self.runner._stop_server(self.server)
        else:
            _stop(self.server.proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C to the process group; SIGKILL if it is still there after 20 s."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            proc.wait(timeout=10)


def _ignore_caches(_dir: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__"]


def example_paths() -> Iterator[Path]:
    yield from sorted(p for p in EXAMPLES.glob("*.py") if p.name != "__init__.py")


def command_env(bin_dir: Path) -> dict[str, str]:
    """The environment of a reader's shell, with BIN_DIR's python and tcpkit first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYTEST"))}
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(bin_dir.parent)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_script(script: Script, workdir: Path, bin_dir: Path, *, may_install: bool) -> Runner:
    """Run SCRIPT in WORKDIR with BIN_DIR's tcpkit; skip if a program it needs is missing."""
    runner = Runner(script, workdir, command_env(bin_dir), may_install=may_install)
    missing = runner.missing_programs()
    if missing:
        pytest.skip(f"{script.name}: {', '.join(missing)} not installed")
    runner.run()
    return runner
