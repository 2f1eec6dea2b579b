# Two entry points: `make demo` (the main job on its embedded default) and `make test` (everything CI runs).
# Each creates its own virtual environment and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

VERSION := $(shell sed -n 's/^version = //p' setup.cfg)
IMAGE ?= pdscale:$(VERSION)
WORKER_IMAGE ?= pdscale-worker:$(VERSION)

.PHONY: demo test test-live-vllm test-sim-native sim-native lint typecheck imports pytest prometheus kubectl image image-worker vllm aiperf clean bench-dynamo bench-speed bench-aic-venv

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,profile,local]'
	touch $(STAMP)

prometheus:
	./scripts/ensure-prometheus.sh

kubectl:
	./scripts/ensure-kubectl.sh

# The controller image (Dockerfile: controller dependencies only, non-root, read-only root filesystem).
# `make image IMAGE=registry.example.com/pdscale:0.1.0`, then push it and set it in manifests/base.
image:
	docker build -t $(IMAGE) .

# The emulated vLLM worker and proxy image of manifests/examples/emulated: the same Dockerfile plus the `worker` extra.
image-worker:
	docker build --build-arg PDSCALE_EXTRAS=worker -t $(WORKER_IMAGE) .

# Real vLLM pods in the live loop alone (tests/e2e/test_live_vllm_loop.py, ~3.5 min on 2 cores; also part of
# `make test`): a prefill and a decode vLLM pool, the controller scales decode 1 -> 2 -> 1 with no request lost.
test-live-vllm: $(STAMP) prometheus kubectl vllm
	$(BIN)/pytest tests/e2e/test_live_vllm_loop.py

# Real vLLM on CPU (.venv-vllm, ~3 min and 2.7 GB the first time) and a tiny local Llama, for the tests that diff
# the emulated worker against it. Idempotent.
vllm:
	./scripts/ensure-vllm.sh

# NVIDIA's aiperf (.venv-aiperf, ~3 min and 1.2 GB the first time; it pins prometheus_client and rich below ours)
# and an offline tokenizer, for the loadgen cross-check. Idempotent.
aiperf:
	./scripts/ensure-aiperf.sh

demo: $(STAMP)
	@$(MAKE) --no-print-directory sim-native || echo "pdscale: the simulator's compiled engine could not be built (above); the demo runs it as plain Python, about half as fast" >&2
	$(BIN)/pdscale demo

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP) prometheus kubectl vllm aiperf sim-native
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

bench-speed: $(STAMP) $(DYNAMO_STAMP) sim-native
	$(BIN)/python bench/bench_sim_speed.py --dynamo-python $(VENV_DYNAMO)/bin/python $(BENCH_ARGS)

# The simulator's engine compiled by mypyc (sim/native.py: the same source, ~2x faster, identical results) into
# build/sim-native; `import sim` uses it while it matches the sources (a no-op when it already does). Needs a C
# compiler and the interpreter's headers (scripts/ensure-c-toolchain.sh installs Debian's gcc and python3-dev).
# `make test` builds it, so the suite runs the compiled engine and tests/sim/test_native_equivalence.py checks it
# against plain Python; `make demo` builds it when it can and otherwise says so and runs plain Python.
sim-native: $(STAMP)
	./scripts/ensure-c-toolchain.sh $(BIN)/python
	$(BIN)/python -m sim.native_cli build

# The compiled engine against plain Python, bit for bit, on bench_engine_equivalence's 27 cases (~1 min).
test-sim-native: sim-native
	$(BIN)/pytest tests/sim/test_native_equivalence.py

# AIConfigurator for bench/bench_vs_aiconfigurator.py only: its own environment, never the product's install.
bench-aic-venv: .venv-aic/.installed
.venv-aic/.installed:
	$(PYTHON) -m venv .venv-aic
	.venv-aic/bin/python -m pip install --quiet 'aiconfigurator==0.12.0'
	touch .venv-aic/.installed

clean:
	rm -rf $(VENV) $(VENV_DYNAMO) build *.egg-info .mypy_cache .pytest_cache .ruff_cache .venv-vllm .cache/pdscale
