# Two commands on a fresh machine: `make demo` and `make test` (both set up .venv first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ENSURE_POSTGRES := scripts/ensure-package.sh postgresql '/usr/lib/postgresql/*/bin/initdb' 'the PostgreSQL tests'
ENSURE_CHROMIUM := scripts/ensure-package.sh chromium chromium 'the browser tests of reports'

.PHONY: demo test lint bench setup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/genesis backtest --config configs/reference.yaml
	$(BIN)/genesis optimize configs/optimize_reference.yaml
	$(BIN)/genesis report reference-2022

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(ENSURE_POSTGRES)
	$(ENSURE_CHROMIUM)
	$(BIN)/python -m pytest -q --durations=15

bench: $(STAMP)
	$(ENSURE_POSTGRES)
	$(BIN)/python benchmarks/bench_backtest.py
	$(BIN)/python benchmarks/bench_optimizer.py

clean:
	rm -rf $(VENV) .cache results .pytest_cache
