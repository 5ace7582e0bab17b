"""The ``tcpkit`` command in a subprocess: startup line, backends, one-line errors, signals."""

from __future__ import annotations

import signal
import socket
import textwrap
from pathlib import Path

import pytest
from helpers import CliServer, run_cli


def talk(port: int, payload: bytes, expect_lines: int) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        data = b""
        while data.count(b"\n") < expect_lines:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n")[:expect_lines]


@pytest.mark.parametrize(
    ("app", "extra", "backend"),
    [
        ("examples/rot13.py:app", [], "asyncio"),
        ("examples.rot13:app", ["--backend", "trio"], "trio"),
        ("examples/rot13.py:app", ["--uvloop"], "asyncio+uvloop"),
        ("examples/rot13.py:app", ["--busy-poll", "0"], "asyncio"),
    ],
)
def test_run_rot13_answers_and_stops_cleanly(app: str, extra: list[str], backend: str) -> None:
    server = CliServer(["run", app, "--port", "0", *extra])
    port = server.wait_started()
    assert "127.0.0.1" in server.startup and f"backend {backend}" in server.startup
    assert talk(port, b"Hello, world\r\n", 2) == [b"Smile from the server!", b"Uryyb, jbeyq"]
    code, _, err = server.stop(signal.SIGINT)
    assert code == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigterm_is_a_graceful_stop(backend: str) -> None:
    server = CliServer(["run", "examples/echo.py:app", "--port", "0", "--backend", backend])
    port = server.wait_started()
    assert talk(port, b"x\n", 1) == [b"x"]
    code, _, err = server.stop(signal.SIGTERM)
    assert code == 0, err
    assert "SIGTERM received" in err


def one_line_error(result: object) -> str:
    code = getattr(result, "returncode")  # noqa: B009
    err: str = getattr(result, "stderr")  # noqa: B009
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_bad_app_path_is_one_line() -> None:
    line = one_line_error(run_cli("run", "no_such_module_xyz:app"))
    assert "could not import module 'no_such_module_xyz'" in line
    line = one_line_error(run_cli("run", "examples/nope.py:app"))
    assert "no such file" in line
    line = one_line_error(run_cli("run", "examples.echo"))
    assert "module:attribute" in line


def test_busy_poll_out_of_range_is_one_line() -> None:
    line = one_line_error(run_cli("run", "examples/echo.py:app", "--busy-poll", "5"))
    assert "argument --busy-poll: must be between 0 and 1" in line


def test_missing_attribute_is_one_line() -> None:
    line = one_line_error(run_cli("run", "examples/echo.py:nope"))
    assert "attribute 'nope' not found" in line


def test_not_an_app_is_one_line() -> None:
    line = one_line_error(run_cli("run", "examples/echo.py:echo"))
    assert "not a tcpkit App" in line and "--factory" in line


def test_import_error_inside_module_is_shown(tmp_path: Path) -> None:
    bad = tmp_path / "broken_app.py"
    bad.write_text(
        textwrap.dedent(
            """
            import tcpkit
            import this_dependency_is_missing_xyz
            app = tcpkit.App()
            """
        )
    )
    result = run_cli("run", f"{bad}:app")
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "this_dependency_is_missing_xyz" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("tcpkit: error: importing")


def test_exception_at_import_is_shown(tmp_path: Path) -> None:
    bad = tmp_path / "raising_app.py"
    bad.write_text("raise RuntimeError('user bug at import')\n")
    result = run_cli("run", f"{bad}:app")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "user bug at import" in result.stderr


def test_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(run_cli("run", "examples/echo.py:app", "--port", str(port)))
    assert "address already in use" in line


def test_factory_flag(tmp_path: Path) -> None:
    mod = tmp_path / "factory_app.py"
    mod.write_text(
        textwrap.dedent(
            """
            from tcpkit import App

            def create():
                app = App(name="made")

                @app.on_connect
                def hi(conn):
                    conn.put("made by factory")

                return app
            """
        )
    )
    server = CliServer(["run", f"{mod}:create", "--factory", "--port", "0"])
    port = server.wait_started()
    assert talk(port, b"", 1) == [b"made by factory"]
    code, _, _ = server.stop(signal.SIGINT)
    assert code == 0


def test_help_runs() -> None:
    result = run_cli("run", "--help")
    assert result.returncode == 0 and "--backend" in result.stdout
