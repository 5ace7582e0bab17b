# Two entry points: `make run` (the rot13 server on port 12345) and `make test` (every check).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 12345

# The full suite runs on $(PYTHON); a quick part of it on each other Python the
# package supports (pyproject's classifiers), each in its own .venv-3.X/.
OTHER_PYTHONS ?= 3.10 3.12 3.13
QUICK_TESTS   ?= tests/codecs --ignore=tests/codecs/test_codec_linearity.py \
	tests/test_app.py tests/test_public_api.py tests/test_package.py::test_plugin_imports_no_tcpkit_module \
	tests/network/test_net_turns.py tests/reliability/test_graceful_shutdown.py \
	tests/testing/test_testing_client.py tests/test_asyncio_private.py

# mkdocs-material prints an end-of-life banner on every build unless this is set (its own
# switch, read in material/templates/__init__.py); warnings still fail `mkdocs build --strict`.
export NO_MKDOCS_2_WARNING := 1

# The interpreter for version $$v: python$$v on PATH, else pyenv's; empty if none runs.
FIND_PYTHON = for c in python$$v $$(ls -d $(HOME)/.pyenv/versions/$$v.*/bin/python 2>/dev/null); do \
	  if [ "$$($$c -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$$v" ]; then \
	    echo $$c; break; fi; done

.PHONY: run test test-slow test-paths-full chaos-soak lint typecheck pytest pythons docs bench bench-full bench-icount clean

$(BIN)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=python3)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade 'pip>=25.1'
	$(BIN)/python -m pip install --quiet -e '.[trio,uvloop,metrics,reload]' --group dev --group docs --group bench
	touch $@

# Made by `make pythons`, which finds the interpreter (FOUND_PYTHON).
.venv-%/bin/.installed: pyproject.toml
	@test -n "$(FOUND_PYTHON)" || { echo "make pythons creates $@"; exit 1; }
	$(FOUND_PYTHON) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --upgrade 'pip>=25.1'
	.venv-$*/bin/python -m pip install --quiet -e '.[trio,uvloop]' --group test
	touch $@

run: $(BIN)/.installed
	$(BIN)/tcpkit run examples/rot13.py:app --port $(PORT)

# check_shape: no function in src/tcpkit over 50 lines or cyclomatic complexity 12.
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tools/check_shape.py src/tcpkit

typecheck: $(BIN)/.installed
	$(BIN)/mypy
	$(BIN)/mypy --strict tests/typing
	$(BIN)/mypy --strict tools
	$(BIN)/pyright
	$(BIN)/pyright tests/typing tools

pytest: $(BIN)/.installed
	$(BIN)/pytest -m "not slow"

# The slow tests (subprocess and real-program tests, soaks, the path matrix's
# full product): CI runs them after `make test`.
test-slow: $(BIN)/.installed
	TCPKIT_PATH_MATRIX=full $(BIN)/pytest -m slow

pythons:
	@for v in $(OTHER_PYTHONS); do \
	  py=$$($(FIND_PYTHON)); \
	  if [ -z "$$py" ]; then \
	    echo "*** Python $$v is not installed (no python$$v on PATH, none in ~/.pyenv/versions): skipping its tests"; \
	    continue; \
	  fi; \
	  echo "*** Python $$v ($$py): quick tests"; \
	  $(MAKE) --no-print-directory .venv-$$v/bin/.installed FOUND_PYTHON=$$py || exit 1; \
	  HYPOTHESIS_PROFILE=dev .venv-$$v/bin/pytest -q -p no:cacheprovider $(QUICK_TESTS) || exit 1; \
	done

# The path matrix's full product (tests/paths): `make test` runs its covering subset.
test-paths-full: $(BIN)/.installed
	TCPKIT_PATH_MATRIX=full $(BIN)/pytest tests/paths -m slow

# The chaos soak (tests/reliability/test_chaos_soak.py, about a minute): `make test` skips it.
chaos-soak: $(BIN)/.installed
	$(BIN)/pytest -m slow tests/reliability/test_chaos_soak.py -s

docs: $(BIN)/.installed
	$(BIN)/mkdocs build --strict --site-dir site

bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks --quick

# The recorded run (about an hour on 2 cores): benchmarks/RESULTS.md, the plots, the
# docs page's tables and benchmarks/results.json. Compare a tree with BASELINE=../tree.
bench-full: $(BIN)/.installed
	$(BIN)/python -m benchmarks --docs --json benchmarks/results.json \
	  $(if $(BASELINE),--baseline $(BASELINE))

bench-icount: $(BIN)/.installed
	$(BIN)/python -m benchmarks.icount $(if $(BASELINE),--baseline $(BASELINE))

test: lint typecheck pytest pythons docs

clean:
	rm -rf $(VENV) $(addprefix .venv-,$(OTHER_PYTHONS)) site .mypy_cache .pytest_cache .ruff_cache
