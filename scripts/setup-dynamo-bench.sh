#!/usr/bin/env bash
# A bench-only virtual environment with NVIDIA Dynamo's mocker and planner (PyPI ai-dynamo 1.6.1), never the
# product's install: `make bench-dynamo` uses it for bench/bench_vs_dynamo_mocker.py, and bench/bench_sim_speed.py
# calls into it to time the mocker beside pdscale's simulator.
#
# ai-dynamo's declared dependencies pull vLLM-era stacks (transformers, aisimulate, redis, ...); the mocker's
# offline replay needs none of them, so both wheels go in with --no-deps and only what these imports need is added:
#   dynamo._core.run_mocker_trace_replay (the Rust mocker)      : nothing beyond the ai-dynamo-runtime wheel
#   dynamo.planner (its planner, imported by bench_vs_dynamo_mocker.py): the module-scope imports of its package
#     (declared: pydantic, msgspec, prometheus-client, kubernetes<33; undeclared but imported: pyyaml,
#     scikit-learn, plotly, pandas, prometheus-api-client, pmdarima, filterpy, prophet)
#   pdscale itself (--no-deps: its kubernetes>=37 pin conflicts with Dynamo's <33; the bench needs numpy, scipy)
# aisimulate==0.13.0 (which ai-dynamo declares, and which provides the aisimulate_core module Dynamo's planner
# imports) is not installable here: PyPI serves only a wheel_stub sdist that downloads the real wheel from NVIDIA's
# own package index at build time. bench_vs_dynamo_mocker.py says what that rules out.
#
# Usage: scripts/setup-dynamo-bench.sh [VENV]   (default .venv-dynamo; PYTHON selects the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-dynamo}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.dynamo-bench-installed"
if [[ -f "$STAMP" && "$STAMP" -nt scripts/setup-dynamo-bench.sh ]]; then
    exit 0
fi
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" --no-deps ai-dynamo==1.6.1 ai-dynamo-runtime==1.6.1
"${PIP[@]}" \
    "numpy>=2.0" "mypy_extensions>=1.0" "scipy>=1.13" \
    "pydantic>=2.10.6,<=2.13.5" "typing-extensions>=4.10.0" "msgspec>=0.19.0" "prometheus-client>=0.23.1,<1.0" \
    "kubernetes>=32.0.1,<33.0.0" "pyyaml>=6.0" "scikit-learn>=1.5" "plotly>=5" "pandas>=2" \
    "prometheus-api-client>=0.5" "pmdarima>=2.0" "filterpy>=1.4" "prophet>=1.1"
"${PIP[@]}" --no-deps -e .
# fail here, not in the bench, if an import is still missing
"$VENV/bin/python" -c "import sim.engine, sim.baselines.dynamo, autoscaler.core.policy"
"$VENV/bin/python" bench/dynamo_planner_import.py
touch "$STAMP"
