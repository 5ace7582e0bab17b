"""Logging set-up for ``tcpkit run`` and ``app.run()``.

Everything tcpkit says goes through stdlib :mod:`logging`, on named loggers:
``tcpkit.server`` (start, stop, drain, reload), ``tcpkit.connection``
(errors of one connection), ``tcpkit.access`` (``--access-log``),
``tcpkit.workers`` (the ``--workers`` supervisor), ``tcpkit.control`` and
``tcpkit.metrics``.

* ``tcpkit run`` without ``--log-config`` logs to stderr in one format,
  ``TIME LEVEL LOGGER: MESSAGE``, at ``--log-level`` (default ``info``).
* ``--log-config FILE`` loads a JSON or YAML file (``logging.config.dictConfig``;
  YAML needs PyYAML) or an ini file (``logging.config.fileConfig``), as
  uvicorn does. Existing loggers stay enabled unless the file says
  ``disable_existing_loggers: true``. ``--log-level``, if also given, then
  sets the level of the ``tcpkit`` loggers.
* ``app.run()`` in a program that configured no logging adds one stderr
  handler to the ``tcpkit`` logger at INFO for the time it runs, so that
  ``python hello.py`` shows where it listens. A program that configured
  logging keeps its configuration.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import sys
from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

from .runconfig import ConfigError

__all__ = ["DEFAULT_FORMAT", "configure_logging", "default_logging"]

DEFAULT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str | None, config_file: str | None = None) -> None:
    """Set up logging for a ``tcpkit run`` process (the supervisor and each worker alike).

    Raises:
        ConfigError: the configuration file is missing, cannot be parsed, is
            refused by :mod:`logging.config`, or is YAML without PyYAML.
    """
    if config_file is None:
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "formatters": {"default": {"format": DEFAULT_FORMAT}},
                "handlers": {
                    "default": {
                        "class": "logging.StreamHandler",
                        "formatter": "default",
                        "stream": "ext://sys.stderr",
                    }
                },
                "root": {"handlers": ["default"], "level": (level or "info").upper()},
            }
        )
        return
    load_config_file(config_file)
    if level is not None:
        logging.getLogger("tcpkit").setLevel(level.upper())


def load_config_file(path: str) -> None:
    """Apply a JSON, YAML or ini logging configuration file.

    Raises:
        ConfigError: as :func:`configure_logging`.
    """
    if os.path.isdir(path):
        raise ConfigError(f"--log-config {path!r} is a directory, not a file")
    if not os.path.exists(path):
        raise ConfigError(f"--log-config: no such file: {path!r}")
    lower = path.lower()
    try:
        if lower.endswith(".json"):
            with open(path, encoding="utf-8") as file:
                _dict_config(json.load(file), path)
        elif lower.endswith((".yaml", ".yml")):
            try:
                import yaml
            except ImportError:
                raise ConfigError(
                    f"--log-config {path!r}: reading YAML needs PyYAML (pip install pyyaml); "
                    "or give the same configuration as .json"
                ) from None
            with open(path, encoding="utf-8") as file:
                _dict_config(yaml.safe_load(file), path)
        else:
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except ConfigError:
        raise
    except Exception as exc:  # json, yaml, configparser and logging.config errors alike
        detail = str(exc) or type(exc).__name__
        raise ConfigError(f"--log-config {path!r}: {detail}") from None


def _dict_config(data: Any, path: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"--log-config {path!r}: expected a mapping (dictConfig schema)")
    config: dict[str, Any] = dict(data)  # pyright: ignore[reportUnknownArgumentType]
    config.setdefault("version", 1)
    config.setdefault("disable_existing_loggers", False)
    logging.config.dictConfig(config)


@contextmanager
def default_logging() -> Generator[None, None, None]:
    """While ``app.run()`` runs: log ``tcpkit`` INFO lines to stderr if nothing else would.

    Does nothing when the root logger or the ``tcpkit`` logger already has a
    handler, or when the ``tcpkit`` logger's level was set.
    """
    root = logging.getLogger()
    ours = logging.getLogger("tcpkit")
    if root.handlers or ours.handlers or ours.level != logging.NOTSET:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(DEFAULT_FORMAT))
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    try:
        yield
    finally:
        ours.removeHandler(handler)
        ours.setLevel(logging.NOTSET)
