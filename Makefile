# Two commands on a fresh machine: `make demo` and `make test` (both set up .venv first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# what `genesis` needs (all the demo installs), then the test and benchmark tools
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev
ENSURE_POSTGRES := scripts/ensure-package.sh postgresql '/usr/lib/postgresql/*/bin/initdb' 'the PostgreSQL tests'
ENSURE_CHROMIUM := scripts/ensure-package.sh chromium chromium 'the browser tests of reports'

.PHONY: demo test lint bench bench-scale bench-quality setup clean

$(RUNTIME): pyproject.toml
	@echo "== setting up $(VENV) with what genesis needs to run (first time only: about a minute)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -e .
	touch $(RUNTIME)

$(DEV): $(RUNTIME)
	@echo "== adding the test and benchmark tools to $(VENV): pytest (and xdist), ruff, mypy, backtesting.py, vectorbt (first time only)"
	$(BIN)/python -m pip install --progress-bar on -e '.[dev]'
	touch $(DEV)

setup: $(DEV)

demo: $(RUNTIME)
	$(BIN)/genesis backtest --config configs/reference.yaml --report results/backtest.html
	$(BIN)/genesis optimize configs/optimize_reference.yaml
	$(BIN)/genesis report reference-2022

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/mypy

# pytest in a process a core, each given whole files (their module fixtures made once): one process kept one core of two busy
test: lint
	$(ENSURE_POSTGRES)
	$(ENSURE_CHROMIUM)
	$(BIN)/python -m pytest -q -n auto --dist loadfile --durations=15

bench: $(DEV)
	$(ENSURE_POSTGRES)
	$(BIN)/python benchmarks/bench_backtest.py
	$(BIN)/python benchmarks/bench_optimizer.py

bench-quality: $(DEV)
	$(BIN)/python benchmarks/bench_quality.py

bench-scale: $(DEV)
	$(ENSURE_POSTGRES)
	$(BIN)/python benchmarks/bench_scale.py

clean:
	rm -rf $(VENV) .cache results .pytest_cache
