"""The package as a user gets it: the built wheel in a fresh venv, its metadata, the plugin.

The wheel test is what "ready to publish" means here: ``python -m build``
makes the sdist and, from it, the wheel; a fresh venv installs the wheel with
pip alone; then every command of the package page (``PYPI.md``), of the
getting-started page and of every example's docstring runs as written against
that install (``tests/doc_commands.py`` has the rules), ``pip install`` lines
included.
"""

from __future__ import annotations

import email.parser
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from email.message import Message
from pathlib import Path

import pytest
from doc_commands import ROOT, Script, docstring_script, example_paths, page_script, run_script

VERSION = re.findall(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)[0]


def test_plugin_imports_no_tcpkit_module(tmp_path: Path) -> None:
    """Loading the pytest plugin (entry point ``pytest11``) imports tcpkit's modules lazily."""
    (tmp_path / "test_modules.py").write_text(
        textwrap.dedent(
            """
            import sys

            def loaded():
                return sorted(m for m in sys.modules if m.split(".")[0] == "tcpkit")

            def test_before_any_fixture():
                assert loaded() == ["tcpkit", "tcpkit.pytest_plugin"], loaded()

            def test_a_fixture_loads_what_it_needs(tcpkit_client):
                assert "tcpkit.testing" in loaded()
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PYTHONPATH"))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_modules.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout, result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build``: the sdist, then the wheel built from the sdist."""
    pytest.importorskip("build", reason="the dev dependency group's `build` is not installed")
    dist = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(f"tcpkit-{VERSION}.dist-info/METADATA").decode()
    return email.parser.Parser().parsestr(text)


@pytest.mark.slow
def test_wheel_metadata_is_the_package_page(wheel: Path) -> None:
    meta = metadata(wheel)
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload().strip() == (ROOT / "PYPI.md").read_text().strip()
    assert meta["Requires-Python"] == ">=3.10"
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    classifiers = meta.get_all("Classifier") or []
    for minor in range(10, 14):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= set(urls)
    assert all(url.startswith("https://") for url in urls.values()), urls
    assert set(meta.get_all("Provides-Extra") or []) == {"trio", "uvloop", "metrics", "reload"}
    requires = meta.get_all("Requires-Dist") or []
    assert "exceptiongroup>=1.2; python_version < '3.11'" in requires, requires
    tools = ("pytest", "mypy", "ruff", "mkdocs", "matplotlib", "hypothesis")
    assert not [r for r in requires if r.startswith(tools)], requires
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert f"tcpkit-{VERSION}.dist-info/licenses/LICENSE" in names
    assert "tcpkit/py.typed" in names
    assert all(n.startswith(("tcpkit/", f"tcpkit-{VERSION}.dist-info/")) for n in names), names


@pytest.fixture(scope="module")
def fresh_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with nothing but the wheel (and what it depends on) installed by pip."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    where = subprocess.run(
        [str(python), "-c", "import tcpkit; print(tcpkit.__file__)"],
        cwd=venv,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert where.startswith(str(venv)), where  # the installed copy, not the checkout
    return venv


USER_SCRIPTS: list[Script] = [
    page_script(ROOT / "PYPI.md"),
    page_script(ROOT / "docs" / "getting-started.md"),
    *(docstring_script(p) for p in example_paths()),
]


@pytest.mark.slow
@pytest.mark.parametrize("script", USER_SCRIPTS, ids=lambda s: s.name)
def test_commands_work_with_the_wheel(
    script: Script, wheel: Path, fresh_venv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `pip install tcpkit` finds the wheel just built (tcpkit is not on PyPI yet).
    links = os.environ.get("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_FIND_LINKS", " ".join(filter(None, [str(wheel.parent), links])))
    runner = run_script(script, tmp_path, fresh_venv / "bin", may_install=True)
    assert runner.ran and not [n for n in runner.not_run if "development venv" in n]
