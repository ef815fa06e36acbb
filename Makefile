# Two commands on a fresh machine: `make demo` and `make test` (both set up .venv first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

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
	scripts/ensure-postgres.sh
	scripts/ensure-chromium.sh
	$(BIN)/python -m pytest -q --durations=15

bench: $(STAMP)
	scripts/ensure-postgres.sh
	$(BIN)/python benchmarks/bench_backtest.py
	$(BIN)/python benchmarks/bench_optimizer.py

clean:
	rm -rf $(VENV) .cache results .pytest_cache
