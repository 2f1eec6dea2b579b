# Two entry points: `make demo` (the main job on its embedded default) and `make test` (everything CI runs).
# Each creates its own virtual environment and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck imports pytest prometheus clean bench-aic-venv

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,profile]'
	touch $(STAMP)

prometheus:
	./scripts/ensure-prometheus.sh

demo: $(STAMP)
	$(BIN)/pdscale demo

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP) prometheus
	$(BIN)/pytest

test: lint typecheck imports pytest

# AIConfigurator for bench/bench_vs_aiconfigurator.py only: its own environment, never the product's install.
bench-aic-venv: .venv-aic/.installed
.venv-aic/.installed:
	$(PYTHON) -m venv .venv-aic
	.venv-aic/bin/python -m pip install --quiet 'aiconfigurator==0.12.0'
	touch .venv-aic/.installed

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
