# Two entry points: `make demo` (the main job on its embedded default) and `make test` (everything CI runs).
# Each creates its own virtual environment and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck imports pytest prometheus vllm clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

prometheus:
	./scripts/ensure-prometheus.sh

# Real vLLM on CPU (.venv-vllm, ~3 min and 2.7 GB the first time) and a tiny local Llama, for the tests that diff
# the emulated worker against it. Idempotent.
vllm:
	./scripts/ensure-vllm.sh

demo: $(STAMP)
	$(BIN)/pdscale demo

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP) prometheus vllm
	$(BIN)/pytest

test: lint typecheck imports pytest

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache .venv-vllm .cache/pdscale
