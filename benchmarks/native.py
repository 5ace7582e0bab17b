"""The C programs of the benchmarks, compiled on first use.

``loadgen.c`` (the load generator) and ``epoll_echo.c`` (the C echo server,
the physical limit of every table) are built with ``cc -O2`` (``$CC`` if set)
into a cache directory, ``$XDG_CACHE_HOME/tcpkit-bench`` (else
``~/.cache/tcpkit-bench``), under a name that hashes the source, the compiler
and the flags: an edited source is rebuilt, an unchanged one never (and builds of other
versions are left alone: another checkout may be running them). With
OpenSSL's headers (Debian: ``libssl-dev``) they speak TLS (``-DWITH_TLS``);
without, they are built plain and the TLS scenarios are skipped. Without a C
compiler there is no C row, and the runner falls back to the Python load
generator (``benchmarks/loadgen.py``) for the scenarios it supports.

``python -m benchmarks.native`` builds both and prints where they are.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CFLAGS = ("-O2", "-std=gnu11", "-Wall")
TLS_CFLAGS = ("-DWITH_TLS",)
TLS_LIBS = ("-lssl", "-lcrypto")


class NativeUnavailable(Exception):
    """A C program could not be built (the message says why)."""


@dataclass(frozen=True)
class Program:
    """A built C program."""

    path: Path
    tls: bool  # built with OpenSSL: accepts --tls


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tcpkit-bench"


def _compiler() -> tuple[str, str]:
    """The compiler's path and its ``--version`` banner (part of the cache key)."""
    cc = os.environ.get("CC", "cc")
    path = shutil.which(cc)
    if path is None:
        raise NativeUnavailable(f"no C compiler ({cc} is not on PATH; Debian: apt-get install gcc)")
    probe = subprocess.run(
        [path, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    return path, probe.stdout


def _compile(cc: str, source: Path, target: Path, tls: bool) -> str | None:
    """Compile ``source`` into ``target`` (atomically); None, or the compiler's complaint."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    flags = [*CFLAGS, *(TLS_CFLAGS if tls else ())]
    libs = list(TLS_LIBS if tls else ())
    try:
        done = subprocess.run(
            [cc, *flags, "-o", tmp, str(source), *libs],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode:
            return done.stderr.strip()[-400:] or f"exit status {done.returncode}"
        os.replace(tmp, target)
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def build(name: str) -> Program:
    """Build ``benchmarks/<name>.c`` (with TLS if possible) unless the cache has it.

    Raises:
        NativeUnavailable: no compiler, or the source does not compile.
    """
    source = HERE / f"{name}.c"
    cc, banner = _compiler()
    targets = {tls: _target(name, source, banner, tls) for tls in (True, False)}
    for tls, target in targets.items():
        if target.exists():  # built before (plain only if TLS did not build)
            return Program(target, tls)
    complaint = ""
    for tls, target in targets.items():
        error = _compile(cc, source, target, tls)
        if error is None:
            return Program(target, tls)
        complaint = complaint or error
    raise NativeUnavailable(f"{Path(cc).name} could not compile {source.name}: {complaint}")


def _target(name: str, source: Path, banner: str, tls: bool) -> Path:
    key = hashlib.sha256()
    for part in (source.read_bytes(), banner.encode(), repr((CFLAGS, tls)).encode()):
        key.update(part)
    return cache_dir() / f"{name}-{key.hexdigest()[:16]}{'-tls' if tls else ''}"


def main() -> int:
    status = 0
    for name in ("loadgen", "epoll_echo"):
        try:
            program = build(name)
        except NativeUnavailable as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            status = 1
        else:
            print(f"{name}: {program.path}{' (with TLS)' if program.tls else ' (no TLS)'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
