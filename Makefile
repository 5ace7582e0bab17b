# Two entry points: `make run` (the rot13 server on port 12345) and `make test` (every check).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 12345

.PHONY: run test test-paths-full lint typecheck pytest docs bench clean

$(BIN)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=python3)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,docs,bench]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/tcpkit run examples/rot13.py:app --port $(PORT)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy
	$(BIN)/mypy --strict tests/typing
	$(BIN)/pyright
	$(BIN)/pyright tests/typing

pytest: $(BIN)/.installed
	$(BIN)/pytest

# The path matrix's full product (tests/paths): `make test` runs its covering subset.
test-paths-full: $(BIN)/.installed
	TCPKIT_PATH_MATRIX=full $(BIN)/pytest tests/paths -m slow

docs: $(BIN)/.installed
	$(BIN)/mkdocs build --strict --site-dir site

bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks --quick

test: lint typecheck pytest docs

clean:
	rm -rf $(VENV) site .mypy_cache .pytest_cache .ruff_cache
