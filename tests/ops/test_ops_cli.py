"""``tcpkit run`` as a subprocess: logging, fail-fast errors, flags and their TCPKIT_* variables.

Every check runs the real command; tcpkit logs to stderr (the startup line
included), which :class:`helpers.CliServer` reads.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trustme
from helpers import ROOT, CliServer, run_cli

from tcpkit.runconfig import DEFAULTS, ENV_PREFIX, add_run_arguments


def talk(port: int, payload: bytes, lines: int, host: str = "127.0.0.1") -> list[bytes]:
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(payload)
        data = b""
        while data.count(b"\n") < lines:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n")[:lines]


ECHO = ("run", "examples/echo.py:app")


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- logging --------------------------------------------------------------------


def test_startup_line_goes_through_logging_to_stderr() -> None:
    server = CliServer(["run", "examples/echo.py:app", "--port", "0"])
    port = server.wait_started()
    assert re.search(
        r" INFO tcpkit\.server: tcpkit \(examples/echo\.py:app\) running on tcp", server.startup
    )
    assert talk(port, b"hi\n", 1) == [b"hi"]
    code, out, err = server.stop(signal.SIGINT)
    assert code == 0, err
    assert out == ""  # nothing on stdout: it is the app's
    assert "SIGINT received, shutting down" in err and "stopped after" in err


def test_app_run_logs_where_it_listens(tmp_path: Path) -> None:
    """``python hello.py`` (getting started): app.run() says where it listens."""
    (tmp_path / "hello.py").write_text(
        textwrap.dedent(
            """
            from tcpkit import App

            app = App(name="hello")

            @app.on_input
            async def echo(conn, line):
                await conn.send(line)

            if __name__ == "__main__":
                app.run(port=0)
            """
        )
    )
    proc = CliServer(
        [],
        command=[sys.executable, "hello.py"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT / "src")},
    )
    port = proc.wait_started()
    assert "hello running on tcp 127.0.0.1:" in proc.startup
    assert "(Press CTRL+C to quit)" in proc.startup
    assert talk(port, b"there\n", 1) == [b"there"]
    code, _, err = proc.stop(signal.SIGINT)
    assert code == 0, err
    assert "hello: stopped after" in err


@pytest.mark.parametrize("level", ["INFO", "Debug"])
def test_log_level_in_any_case(level: str) -> None:
    server = CliServer(["run", "examples/echo.py:app", "--port", "0", "--log-level", level])
    server.wait_started()
    code, _, err = server.stop(signal.SIGINT)
    assert code == 0, err
    assert ("DEBUG tcpkit." in err) == (level == "Debug")


def test_log_level_warn_hides_info(sock_dir: Path) -> None:
    path = str(sock_dir / "quiet.sock")
    server = CliServer(["run", "examples/echo.py:app", "--uds", path, "--log-level", "WARN"])
    deadline = time.monotonic() + 20
    while True:  # no startup line to wait for: wait until it answers (bounded)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(20)
            try:
                sock.connect(path)
                sock.sendall(b"up?\n")
                if sock.recv(10) == b"up?\r\n":
                    break
            except OSError:
                pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    code, _, err = server.stop(signal.SIGINT)
    assert code == 0, err
    assert err == ""


def test_bad_log_level_is_one_line() -> None:
    line = one_line(run_cli("run", "examples/echo.py:app", "--log-level", "loud"))
    assert "--log-level: expected one of critical, error, warning, info, debug (any case)" in line


LOG_JSON = {
    "version": 1,
    "formatters": {"marked": {"format": "FROM-JSON %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "err": {
            "class": "logging.StreamHandler",
            "formatter": "marked",
            "stream": "ext://sys.stderr",
        }
    },
    "root": {"handlers": ["err"], "level": "INFO"},
}
LOG_YAML = """
version: 1
formatters:
  marked: {format: "FROM-YAML %(levelname)s %(name)s %(message)s"}
handlers:
  err: {class: logging.StreamHandler, formatter: marked, stream: "ext://sys.stderr"}
root: {handlers: [err], level: INFO}
"""
LOG_INI = """
[loggers]
keys=root

[handlers]
keys=err

[formatters]
keys=marked

[logger_root]
level=INFO
handlers=err

[handler_err]
class=StreamHandler
formatter=marked
args=(sys.stderr,)

[formatter_marked]
format=FROM-INI %(levelname)s %(name)s %(message)s
"""


@pytest.mark.parametrize(
    ("name", "text", "marker"),
    [
        ("log.json", json.dumps(LOG_JSON), "FROM-JSON"),
        ("log.yaml", LOG_YAML, "FROM-YAML"),
        ("log.ini", LOG_INI, "FROM-INI"),
    ],
)
def test_log_config_files(tmp_path: Path, name: str, text: str, marker: str) -> None:
    (tmp_path / name).write_text(text)
    server = CliServer(
        ["run", "examples/echo.py:app", "--port", "0", "--log-config", str(tmp_path / name)]
    )
    server.wait_started()
    assert server.startup.startswith(
        f"{marker} INFO tcpkit.server tcpkit (examples/echo.py:app) running on"
    )
    code, _, err = server.stop(signal.SIGINT)
    assert code == 0, err


def test_log_config_errors_are_one_line(tmp_path: Path) -> None:
    line = one_line(
        run_cli("run", "examples/echo.py:app", "--log-config", str(tmp_path / "no.json"))
    )
    assert "--log-config: no such file" in line
    (tmp_path / "bad.json").write_text("{not json")
    line = one_line(
        run_cli("run", "examples/echo.py:app", "--log-config", str(tmp_path / "bad.json"))
    )
    assert "bad.json" in line and "Expecting property name" in line
    (tmp_path / "bad.json").write_text('{"version": 1, "handlers": {"h": {"class": "no.Such"}}}')
    line = one_line(
        run_cli("run", "examples/echo.py:app", "--log-config", str(tmp_path / "bad.json"))
    )
    assert "bad.json" in line and "handler" in line


def test_yaml_log_config_without_pyyaml_is_one_line(tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "yaml.py").write_text(
        "raise ImportError('No module named yaml (hidden by the test)')\n"
    )
    (tmp_path / "log.yaml").write_text(LOG_YAML)
    result = run_cli(
        "run",
        "examples/echo.py:app",
        "--log-config",
        str(tmp_path / "log.yaml"),
        env={"PYTHONPATH": str(hide)},
    )
    line = one_line(result)
    assert "reading YAML needs PyYAML (pip install pyyaml)" in line


JSON_FORMATTER = """
import json
import logging

FIELDS = ("conn_id", "peer", "remote_ip", "remote_port", "duration", "bytes_in", "bytes_out",
          "messages_in", "messages_out", "reason", "error", "server")


class JsonFormatter(logging.Formatter):
    def format(self, record):
        data = {"logger": record.name, "message": record.getMessage()}
        data.update({k: getattr(record, k) for k in FIELDS if hasattr(record, k)})
        return json.dumps(data)
"""


def test_access_log_line_and_its_extra_fields_through_a_json_formatter(tmp_path: Path) -> None:
    (tmp_path / "jsonfmt.py").write_text(JSON_FORMATTER)
    config = {
        "version": 1,
        "formatters": {"json": {"()": "jsonfmt.JsonFormatter"}},
        "handlers": {
            "err": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["err"], "level": "INFO"},
    }
    (tmp_path / "log.json").write_text(json.dumps(config))
    server = CliServer(
        [
            *("run", "examples/rot13.py:app", "--port", "0", "--access-log"),
            *("--log-config", str(tmp_path / "log.json")),
        ],
        env={"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "src")])},
    )
    port = server.wait_started()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        local_port = sock.getsockname()[1]
        sock.sendall(b"abc\r\nxyz\r\n")
        data = b""
        while data.count(b"\n") < 3:
            data += sock.recv(4096)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(4096):
            pass
    text = server.wait_for('"logger": "tcpkit.access"')
    code, _, err = server.stop(signal.SIGINT)
    assert code == 0, err
    access = [json.loads(line) for line in text.splitlines() if '"tcpkit.access"' in line]
    [record] = access
    greeting = len(b"Smile from the server!\r\n")
    assert record["peer"] == f"127.0.0.1:{local_port}" and record["remote_port"] == local_port
    assert record["reason"] == "eof" and record["error"] is None
    assert (record["bytes_in"], record["messages_in"]) == (10, 2)
    assert (record["bytes_out"], record["messages_out"]) == (greeting + 10, 3)
    assert record["server"] == "rot13" and record["duration"] >= 0
    assert record["message"] == (
        f"rot13 #{record['conn_id']} 127.0.0.1:{local_port}: closed (eof) after "
        f"{record['duration']:.3f} s, in 10 B 2 msg, out {greeting + 10} B 3 msg"
    )


# -- draining and forcing ------------------------------------------------------------


def test_drain_says_what_it_waits_for_and_a_second_signal_exits_1() -> None:
    server = CliServer(["run", "examples/chargen.py:app", "--port", "0", "--drain-timeout", "120"])
    port = server.wait_started()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.recv(100)  # the stream has begun; from now on this client reads nothing
        server.proc.send_signal(signal.SIGINT)
        text = server.wait_for("waiting for 1 connection(s) to finish sending")
        assert "at most 120 s before aborting them; SIGINT again to force" in text
        server.proc.send_signal(signal.SIGINT)
        code, _, err = server.stop(None)
    assert code == 1, err
    assert "SIGINT received again, aborting 1 connection(s)" in err


# -- fail fast: missing optional packages ------------------------------------------------


@pytest.mark.parametrize(
    ("module", "flags", "extra"),
    [
        ("trio", ["--backend", "trio"], "trio"),
        ("uvloop", ["--uvloop"], "uvloop"),
        ("uvloop", ["--uvloop", "--workers", "2"], "uvloop"),
        ("prometheus_client", ["--metrics", "127.0.0.1:0"], "metrics"),
        ("watchfiles", ["--reload"], "reload"),
    ],
)
def test_a_missing_optional_package_is_one_line_naming_the_extra(
    tmp_path: Path, module: str, flags: list[str], extra: str
) -> None:
    (tmp_path / f"{module}.py").write_text(f"raise ImportError('{module} hidden by the test')\n")
    result = run_cli(
        "run", "examples/echo.py:app", "--port", "0", *flags, env={"PYTHONPATH": str(tmp_path)}
    )
    line = one_line(result)
    assert f"pip install 'tcpkit[{extra}]'" in line, line


# -- flags, their variables, help and version ---------------------------------------------


def test_every_run_option_has_help_and_a_variable() -> None:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    seen = set()
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help and len(action.help) > 20, action.dest
        assert f"(env {ENV_PREFIX}{action.dest.upper()}" in action.help, action.help
        seen.add(action.dest)
    assert seen == set(DEFAULTS)


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"tcpkit \S+ \(Python 3\.\d+\.\d+, anyio \S+\)\n", result.stdout)


def test_variables_configure_and_flags_win() -> None:
    env = {
        "TCPKIT_APP": "examples/echo.py:app",
        "TCPKIT_PORT": "0",
        "TCPKIT_BACKEND": "trio",
        "TCPKIT_HOST": "127.0.0.1",
        "TCPKIT_ACCESS_LOG": "yes",
    }
    server = CliServer(["run"], env=env)
    port = server.wait_started()
    assert "[backend trio]" in server.startup
    assert talk(port, b"env\n", 1) == [b"env"]
    server.wait_for("closed (eof)")
    code, _, err = server.stop(signal.SIGINT)
    assert code == 0, err
    server = CliServer(["run", "--backend", "asyncio", "--no-access-log"], env=env)
    port = server.wait_started()
    assert "[backend asyncio]" in server.startup
    assert talk(port, b"flag\n", 1) == [b"flag"]
    code, _, err = server.stop(signal.SIGINT)
    assert code == 0, err
    assert "closed (" not in err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TCPKIT_PORT": "http"}, "TCPKIT_PORT='http': expected a whole number"),
        ({"TCPKIT_PROXY_PROTOCOL": "maybe"}, "TCPKIT_PROXY_PROTOCOL='maybe': expected 1/true"),
        ({"TCPKIT_BACKEND": "curio"}, "TCPKIT_BACKEND='curio': expected one of asyncio, trio"),
        ({"TCPKIT_DRAIN_TIMEOUT": "-5"}, "TCPKIT_DRAIN_TIMEOUT='-5': must be >= 0"),
    ],
)
def test_bad_variables_are_one_line(env: dict[str, str], message: str) -> None:
    assert message in one_line(run_cli("run", "examples/echo.py:app", env=env))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--drain-timeout", "-1"], "argument --drain-timeout: must be >= 0 (seconds), got '-1'"),
        (["--drain-timeout", "nan"], "argument --drain-timeout: expected a finite number"),
        (["--max-connections", "-3"], "argument --max-connections: must be >= 0, got '-3'"),
        (["--port", "70000"], "argument --port: must be between 0 and 65535"),
        (["--backlog", "0"], "argument --backlog: must be >= 1"),
        (["--uds-mode", "999"], "argument --uds-mode: expected octal permissions"),
        (["--metrics", "localhost"], "argument --metrics: bad address 'localhost'"),
        (["--uvloop", "--backend", "trio"], "--uvloop needs --backend asyncio"),
        (["--ssl-keyfile", "k.pem"], "--ssl-keyfile needs --ssl-certfile"),
    ],
)
def test_bad_flags_are_one_line(flags: list[str], message: str) -> None:
    assert message in one_line(run_cli("run", "examples/echo.py:app", *flags))


def test_no_app_is_one_line() -> None:
    assert "give the app to run" in one_line(run_cli("run"))


@pytest.mark.parametrize("spec", ["./examples:app", "examples/:app"])
def test_a_directory_as_the_app_path_is_one_clear_line(spec: str) -> None:
    assert "is a directory, not a Python file" in one_line(run_cli("run", spec))


def test_a_package_as_the_app_module_gets_a_hint() -> None:
    line = one_line(run_cli("run", "examples:app"))
    assert "'examples' is a package directory: name a module in it" in line


# -- listening flags ------------------------------------------------------------------------


def test_uds_mode_backlog_and_reuse_port(sock_dir: Path) -> None:
    path = str(sock_dir / "m.sock")
    server = CliServer(["run", "examples/echo.py:app", "--uds", path, "--uds-mode", "600"])
    try:
        server.wait_line("running on unix:")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        code, _, err = server.stop(signal.SIGINT)
    assert code == 0, err
    first = CliServer(
        ["run", "examples/echo.py:app", "--port", "0", "--reuse-port", "--backlog", "7"]
    )
    port = first.wait_started()
    second = CliServer(["run", "examples/echo.py:app", "--port", str(port), "--reuse-port"])
    try:
        assert second.wait_started() == port  # SO_REUSEPORT: both bound the same port
        ss = shutil.which("ss")
        if ss is not None:  # a listening socket's Send-Q is its backlog
            out = subprocess.run(
                [ss, "-ltnH", "-p", f"sport = :{port}"], capture_output=True, text=True, timeout=10
            ).stdout
            backlogs = {
                int(line.split()[2])
                for line in out.splitlines()
                if f"pid={first.proc.pid}," in line
            }
            assert backlogs == {7}, out
    finally:
        for server in (first, second):
            code, _, err = server.stop(signal.SIGINT)
            assert code == 0, err


def test_setup_timeout_and_idle_timeout() -> None:
    server = CliServer(
        [*ECHO, "--port", "0", "--proxy-protocol", "--setup-timeout", "0.2", "--access-log"]
    )
    port = server.wait_started()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        assert sock.recv(10) == b""  # no PROXY header: closed once the setup time is over
    server.wait_for("rejected (setup-timeout)")
    server.stop(signal.SIGINT)
    server = CliServer(["run", "examples/echo.py:app", "--port", "0", "--idle-timeout", "0.2"])
    port = server.wait_started()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        assert sock.recv(10) == b""
    code, _, err = server.stop(signal.SIGINT)
    assert code == 0, err
    assert "no progress either way for 0.2 s (idle_timeout)" in err


# -- TLS flags -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    ca = trustme.CA()
    other = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("client@example")
    stranger = other.issue_cert("127.0.0.1")
    d = tmp_path_factory.mktemp("pki")
    files = {
        "ca": d / "ca.pem",
        "cert": d / "cert.pem",
        "key": d / "key.pem",
        "both": d / "both.pem",
        "other_key": d / "other-key.pem",
        "client": d / "client.pem",
        "encrypted_key": d / "encrypted-key.pem",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    server_cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server_cert.private_key_pem.write_to_path(str(files["key"]))
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(files["both"]))
    stranger.private_key_pem.write_to_path(str(files["other_key"]))
    client_cert.private_key_and_cert_chain_pem.write_to_path(str(files["client"]))
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(server_cert.private_key_pem.bytes(), None)
    files["encrypted_key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    return files


def test_tls_file_errors_name_the_file(pki: dict[str, Path], tmp_path: Path) -> None:
    run = ["run", "examples/echo.py:app", "--port", "0"]
    line = one_line(run_cli(*run, "--ssl-certfile", "/missing.pem"))
    assert line == "tcpkit: error: --ssl-certfile: no such file: '/missing.pem'"
    line = one_line(run_cli(*run, "--ssl-certfile", str(pki["cert"])))
    assert (
        f"--ssl-certfile '{pki['cert']}' holds no private key: give its key with --ssl-keyfile"
        in line
    )
    line = one_line(
        run_cli(*run, "--ssl-certfile", str(pki["cert"]), "--ssl-keyfile", str(pki["other_key"]))
    )
    assert "the private key does not belong to the certificate" in line and "PEM lib" not in line
    line = one_line(
        run_cli(
            *run, "--ssl-certfile", str(pki["cert"]), "--ssl-keyfile", str(pki["encrypted_key"])
        )
    )
    assert str(pki["encrypted_key"]) in line and "is encrypted: give its password" in line
    line = one_line(run_cli(*run, "--ssl-certfile", str(tmp_path)))
    assert "is a directory" in line
    line = one_line(
        run_cli(*run, "--ssl-certfile", str(pki["both"]), "--ssl-cert-reqs", "required")
    )
    assert "--ssl-cert-reqs required needs --ssl-ca-certs" in line


def test_key_password_from_the_environment(pki: dict[str, Path]) -> None:
    server = CliServer(
        [
            *(*ECHO, "--port", "0", "--ssl-certfile", str(pki["cert"])),
            *("--ssl-keyfile", str(pki["encrypted_key"])),
        ],
        env={"TCPKIT_SSL_KEYFILE_PASSWORD": "s3cret"},
    )
    port = server.wait_started()
    assert "running on tls" in server.startup
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"locked\n")
        assert tls.recv(100) == b"locked\r\n"
    code, _, err = server.stop(signal.SIGINT)
    assert code == 0, err


def send_over_tls(context: ssl.SSLContext, port: int) -> None:
    """Send a line over TLS; raise if the server refuses us (during or after the handshake)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"x\n")
        if not tls.recv(100):  # TLS 1.3: the refusal comes after the client's handshake
            raise ConnectionResetError("closed")


def test_client_certificates_required(pki: dict[str, Path]) -> None:
    server = CliServer(
        [
            *(*ECHO, "--port", "0", "--ssl-certfile", str(pki["both"])),
            *("--ssl-ca-certs", str(pki["ca"]), "--ssl-cert-reqs", "required"),
        ]
    )
    port = server.wait_started()
    try:
        anonymous = ssl.create_default_context(cafile=str(pki["ca"]))
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            send_over_tls(anonymous, port)
        known = ssl.create_default_context(cafile=str(pki["ca"]))
        known.load_cert_chain(str(pki["client"]))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            known.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"mutual\n")
            assert tls.recv(100) == b"mutual\r\n"
    finally:
        code, _, err = server.stop(signal.SIGINT)
    assert code == 0, err
