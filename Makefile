# Two entry points: `make demo` (the main job on its embedded default) and `make test` (everything CI runs).
# Each creates its own virtual environment and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck imports pytest prometheus clean bench-dynamo bench-speed

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
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

# Benchmarks against NVIDIA Dynamo's mocker, in a bench-only environment (never the product's install; not part of
# `make test`). BENCH_ARGS passes flags through, e.g. make bench-dynamo BENCH_ARGS="--policy pdscale --json".
VENV_DYNAMO ?= .venv-dynamo
DYNAMO_STAMP := $(VENV_DYNAMO)/.dynamo-bench-installed

$(DYNAMO_STAMP): scripts/setup-dynamo-bench.sh
	PYTHON=$(PYTHON) ./scripts/setup-dynamo-bench.sh $(VENV_DYNAMO)

bench-dynamo: $(DYNAMO_STAMP)
	$(VENV_DYNAMO)/bin/python bench/bench_vs_dynamo_mocker.py $(BENCH_ARGS)

bench-speed: $(STAMP) $(DYNAMO_STAMP)
	$(BIN)/python bench/bench_sim_speed.py --dynamo-python $(VENV_DYNAMO)/bin/python $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VENV_DYNAMO) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
