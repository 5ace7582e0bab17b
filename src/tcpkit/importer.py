"""Loading an app from ``module:attr`` or ``path/to/file.py:attr``.

Like uvicorn's importer, this tells "your module could not be found" apart
from "an import inside your module failed": the first is a one-line user
error, the second is the user's bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

__all__ = ["AppImportError", "ModuleRaised", "import_from_string"]


class AppImportError(Exception):
    """The app string does not name a loadable object (a one-line user error)."""


class ModuleRaised(Exception):
    """Importing the user's module raised; ``__cause__`` is the real exception."""


def import_from_string(spec: str) -> Any:
    """Return the object named by ``"module:attr"`` or ``"path/to/file.py:attr"``.

    ``attr`` may be dotted (``module:factory.app``).

    Raises:
        AppImportError: bad format, module or file not found, attribute missing.
        ModuleRaised: the module was found but raised while importing.
    """
    module_part, sep, attr = spec.partition(":")
    if not sep or not module_part or not attr:
        raise AppImportError(
            f'app must be given as "module:attribute" or "path/to/file.py:attribute", got {spec!r}'
        )
    module = _load_module(module_part)
    obj: Any = module
    for name in attr.split("."):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            hint = ""
            if obj is module and hasattr(module, "__path__"):  # a package: a directory
                hint = (
                    f" ({module_part!r} is a package directory: name a module in it, "
                    f"e.g. {module_part}.server:{attr})"
                )
            raise AppImportError(
                f"attribute {attr!r} not found in module {module.__name__!r}{hint}"
            ) from None
    return obj


def _load_module(module_part: str) -> ModuleType:
    if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
        return _load_file(module_part)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_part)
    except ModuleNotFoundError as exc:
        # Only "the module itself is missing" is a user error; a missing
        # import *inside* the module is the module's bug.
        if exc.name is not None and (
            module_part == exc.name or module_part.startswith(exc.name + ".")
        ):
            raise AppImportError(f"could not import module {module_part!r}") from None
        raise ModuleRaised(f"importing {module_part!r} failed") from exc
    except Exception as exc:
        raise ModuleRaised(f"importing {module_part!r} failed") from exc


def _load_file(path: str) -> ModuleType:
    if os.path.isdir(path):
        raise AppImportError(
            f"{path!r} is a directory, not a Python file: give path/to/file.py:attribute "
            "(or package.module:attribute)"
        )
    if not os.path.isfile(path):
        raise AppImportError(f"no such file: {path!r}")
    name = os.path.splitext(os.path.basename(path))[0]
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:
        sys.path.insert(0, directory)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AppImportError(f"cannot load {path!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ModuleRaised(f"importing {path!r} failed") from exc
    return module
