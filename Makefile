# Quick start: `make demo` starts the portal, a demo shop and a phone screen (state in .demo); `make test` runs the suite.
# Both create the virtual environment in .venv on first use. `make test` runs ruff, the import
# contracts, mypy (strict where pyproject says) and pytest.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTANCE ?= .instance

.PHONY: demo test lint clean

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Myna Gateway needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

demo: $(BIN)/.installed
	$(BIN)/myna-demo

# The suite waits on servers and subprocesses more than it computes: three pytest-xdist workers,
# each test file on one worker (its module fixtures, such as a gunicorn world, are built once).
test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest -n 3 --dist loadfile

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(INSTANCE) .demo test-output .pytest_cache .coverage
