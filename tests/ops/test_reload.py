"""SIGHUP is a graceful reload: clients talk through it and lose nothing.

Without ``--workers`` the process drains with its listening sockets open and
re-executes itself (same pid) on them; under ``--workers`` the workers are
replaced one at a time. Either way: no refused connect, no lost reply, and
the new code answers afterwards. ``--reload`` does the same on a file change.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest
from helpers import CliServer, run_cli
from reload_load import Load, write_app

pytestmark = pytest.mark.slow

FIGURES: list[str] = []


def report(label: str, load: Load, reload_at: float, lost: set[str]) -> None:
    """Keep the figures of one run (printed at the end of the module with -s)."""
    seen = load.seen
    during = sum(1 for t in seen.connect_times if t >= reload_at)
    FIGURES.append(
        f"{label}: {seen.connects} connects ({during} after the SIGHUP), "
        f"{len(seen.replies)} replies, refused={seen.refused}, resets={seen.resets}, "
        f"lost replies={len(lost)}, retried after a graceful close={seen.retried}, "
        f"versions={seen.versions}"
    )
    print(FIGURES[-1])


@pytest.mark.parametrize("backend", ["asyncio", "uvloop", "trio"])
def test_sighup_reexecutes_on_the_same_sockets(tmp_path: Path, backend: str) -> None:
    app, log = tmp_path / "reloadable.py", tmp_path / "handled.log"
    write_app(app, "v1", log)
    flags = ["--uvloop"] if backend == "uvloop" else ["--backend", backend]
    server = CliServer(["run", f"{app}:app", "--port", "0", "--drain-timeout", "10", *flags])
    port = server.wait_started()
    with Load(port) as load:
        load.wait_for("v1", 40)
        write_app(app, "v2", log)  # the new code, on disk before the signal
        reload_at = time.monotonic()
        server.proc.send_signal(signal.SIGHUP)
        load.wait_for("v2", 40)
    text = server.wait_for("running on", 2)
    lost = load.lost(log)
    report(f"reload in place [{backend}]", load, reload_at, lost)
    seen = load.seen
    assert not seen.errors, seen.errors
    assert seen.refused == 0  # resets are counted and retried: lost says what counts
    assert lost == set()
    assert seen.pids == {server.proc.pid}  # the same process, re-executed
    assert "reloading (the listening sockets stay open)" in text
    assert "re-executing" in text
    assert text.count(f"running on tcp 127.0.0.1:{port}") == 2
    code, _, err = server.stop(signal.SIGTERM)
    assert code == 0, err


def test_a_reload_with_broken_code_keeps_the_old_code_serving(tmp_path: Path) -> None:
    app, log = tmp_path / "reloadable.py", tmp_path / "handled.log"
    write_app(app, "v1", log)
    server = CliServer(["run", f"{app}:app", "--port", "0"])
    port = server.wait_started()
    with Load(port, threads=2) as load:
        load.wait_for("v1", 10)
        app.write_text("def broken(:\n")
        server.proc.send_signal(signal.SIGHUP)
        text = server.wait_for("reload refused")
        count = load.seen.versions["v1"]
        load.wait_for("v1", count + 10)  # still answering, old code
    assert "the app does not load" in text and "SyntaxError" in text
    assert load.seen.refused == 0 and not load.seen.errors
    write_app(app, "v3", log)  # fixed: the next reload goes through
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for("running on", 2)
    with Load(port, threads=1) as load:
        load.wait_for("v3", 3)
    code, _, err = server.stop(signal.SIGINT)
    assert code == 0, err


def test_reload_keeps_a_unix_socket_control_and_metrics(tmp_path: Path, sock_dir: Path) -> None:
    app, log = tmp_path / "reloadable.py", tmp_path / "handled.log"
    write_app(app, "v1", log)
    path, control = str(sock_dir / "app.sock"), str(sock_dir / "ctl.sock")
    server = CliServer(
        ["run", f"{app}:app", "--uds", path, "--control", control, "--metrics", "127.0.0.1:0"]
    )
    server.wait_line("running on unix:")
    metrics = re.search(r"metrics at http://(\S+)/metrics", server.wait_for("metrics at"))
    assert metrics is not None
    with Load(0, threads=2, unix=path) as load:
        load.wait_for("v1", 10)
        write_app(app, "v2", log)
        reload_at = time.monotonic()
        reply = json.loads(run_cli("ctl", control, "reload").stdout)
        assert reply == {"ok": True, "reloading": True}
        load.wait_for("v2", 10)
    lost = load.lost(log)
    report("reload in place [unix socket, via tcpkit ctl]", load, reload_at, lost)
    assert load.seen.refused == 0 and lost == set() and not load.seen.errors
    text = server.wait_for(f"metrics at http://{metrics[1]}/metrics", 2)  # the same port
    assert text.count("control socket at unix:") == 2
    reply = json.loads(run_cli("ctl", control, "stats").stdout)
    assert reply["ok"] and reply["pid"] == server.proc.pid
    code, _, err = server.stop(signal.SIGTERM)
    assert code == 0, err
    for leftover in (path, control):
        assert not Path(leftover).exists(), f"{leftover} is removed at the final stop"


def test_sigterm_during_a_reload_stops_instead(tmp_path: Path) -> None:
    app, log = tmp_path / "reloadable.py", tmp_path / "handled.log"
    write_app(app, "v1", log)
    server = CliServer(["run", f"{app}:app", "--port", "0", "--drain-timeout", "30"])
    port = server.wait_started()
    import socket

    held = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        held.sendall(b"hold\n")
        assert held.recv(100).startswith(b"v1 ")
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for("reloading (the listening sockets stay open)")
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for("stopping instead of reloading")
    finally:
        held.close()
    code, _, err = server.stop(None)
    assert code == 0, err
    assert "re-executing" not in err


def test_workers_rolling_restart(tmp_path: Path) -> None:
    app, log = tmp_path / "reloadable.py", tmp_path / "handled.log"
    write_app(app, "v1", log)
    server = CliServer(["run", f"{app}:app", "--port", "0", "--workers", "2"])
    port = server.wait_started()
    started = server.wait_for("2 worker(s) serving")
    old = {int(pid) for pid in re.findall(r"worker \d \(pid (\d+)\) serving", started)}
    assert len(old) == 2
    with Load(port) as load:
        load.wait_for("v1", 40)
        assert load.seen.pids <= old
        write_app(app, "v2", log)
        reload_at = time.monotonic()
        server.proc.send_signal(signal.SIGHUP)
        text = server.wait_for("reload done")
        load.wait_for("v2", 40)
    lost = load.lost(log)
    report("rolling restart [--workers 2]", load, reload_at, lost)
    seen = load.seen
    assert not seen.errors, seen.errors
    assert seen.refused == 0 and lost == set()  # a reset (see reload_load) loses nothing
    assert seen.pids - old, "the new workers answered"
    # every worker was replaced, and never fewer than 2 served: each old worker
    # drains only once its successor serves
    steps = re.findall(r"worker (\d): pid (\d+) serves, draining pid (\d+)", text)
    assert [slot for slot, _, _ in steps] == ["1", "2"]
    assert {int(retired) for _, _, retired in steps} == old
    assert not {int(successor) for _, successor, _ in steps} & old
    for _, successor, retired in steps:
        assert text.index(f"(pid {successor}) serving") < text.index(f"draining pid {retired}")
    code, _, err = server.stop(signal.SIGTERM)
    assert code == 0, err


def test_workers_reload_with_broken_code_keeps_the_workers(tmp_path: Path) -> None:
    app, log = tmp_path / "reloadable.py", tmp_path / "handled.log"
    write_app(app, "v1", log)
    server = CliServer(["run", f"{app}:app", "--port", "0", "--workers", "2"])
    port = server.wait_started()
    server.wait_for("2 worker(s) serving")
    app.write_text("raise RuntimeError('broken deploy')\n")
    server.proc.send_signal(signal.SIGHUP)
    text = server.wait_for("reload stopped")
    assert "broken deploy" in text and "0 of 2 worker(s) replaced" in text
    with Load(port, threads=2) as load:
        load.wait_for("v1", 10)
    assert load.seen.refused == 0
    code, _, err = server.stop(signal.SIGTERM)
    assert code == 0, err


def test_dev_reload_on_a_file_change(tmp_path: Path) -> None:
    pytest.importorskip("watchfiles")
    app, log = tmp_path / "reloadable.py", tmp_path / "handled.log"
    write_app(app, "v1", log)
    server = CliServer(["run", f"{app}:app", "--port", "0", "--reload"])
    port = server.wait_started()
    server.wait_for("--reload: watching")
    with Load(port, threads=2) as load:
        load.wait_for("v1", 10)
        write_app(app, "v2", log)  # no signal: the change is enough
        load.wait_for("v2", 10)
    text = server.wait_for("running on", 2)
    assert "reloadable.py changed" in text
    assert load.seen.refused == 0 and load.lost(log) == set()
    code, _, err = server.stop(signal.SIGINT)
    assert code == 0, err


def test_dev_reload_under_workers(tmp_path: Path) -> None:
    pytest.importorskip("watchfiles")
    app, log = tmp_path / "reloadable.py", tmp_path / "handled.log"
    write_app(app, "v1", log)
    server = CliServer(["run", f"{app}:app", "--port", "0", "--workers", "2", "--reload"])
    port = server.wait_started()
    server.wait_for("--reload: watching")
    with Load(port, threads=2) as load:
        load.wait_for("v1", 10)
        write_app(app, "v2", log)
        server.wait_for("reload done")
        load.wait_for("v2", 10)
    assert load.seen.refused == 0 and load.lost(log) == set()
    code, _, err = server.stop(signal.SIGTERM)
    assert code == 0, err
    assert "reloadable.py changed: restarting 2 worker(s) one at a time" in err


def teardown_module() -> None:
    if FIGURES:
        print("\nreload figures:\n" + "\n".join(FIGURES))
