#!/usr/bin/env bash
# Build `.venv-aiperf` (NVIDIA's aiperf benchmark client, PyPI) and a local BPE tokenizer in Hugging Face cache
# layout, so aiperf runs offline. aiperf lives in its own venv: it pins prometheus_client and rich below the
# project's. Idempotent: a stamp per step; a second run is instant.
#
#   AIPERF_VENV      where the virtual environment goes                 (default: <repo>/.venv-aiperf)
#   PDSCALE_CACHE    where the tokenizer goes (HF_HOME is $PDSCALE_CACHE/hf) (default: <repo>/.cache/pdscale)
#   PYTHON           the interpreter that creates the venv               (default: python3)
#
# Prints, as its last line: AIPERF_BIN HF_HOME TOKENIZER_NAME (run aiperf with HF_HOME and HF_HUB_OFFLINE=1).
# The tokenizer is scripts/build_tiny_llama.py's (trained on the Python standard library: no downloads).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AIPERF_VENV="${AIPERF_VENV:-$REPO/.venv-aiperf}"
PDSCALE_CACHE="${PDSCALE_CACHE:-$REPO/.cache/pdscale}"
PYTHON="${PYTHON:-python3}"
AIPERF_VERSION="0.13.0"
STAMP="$AIPERF_VENV/.pdscale-aiperf-$AIPERF_VERSION"
REV="0000000000000000000000000000000000000000"
TOKENIZER_NAME="pdscale/tiny-tokenizer"

log() { echo "ensure-aiperf: $*" >&2; }

if [ ! -f "$STAMP" ]; then
  log "building $AIPERF_VENV (aiperf $AIPERF_VERSION; ~2-3 min, ~1.2 GB)"
  rm -rf "$AIPERF_VENV"
  "$PYTHON" -m venv "$AIPERF_VENV"
  "$AIPERF_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$AIPERF_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "aiperf==$AIPERF_VERSION"
  touch "$STAMP"
fi

REPO_DIR="$PDSCALE_CACHE/hf/hub/models--pdscale--tiny-tokenizer"
SNAPSHOT="$REPO_DIR/snapshots/$REV"
if [ ! -f "$SNAPSHOT/.complete" ]; then
  log "building the BPE tokenizer in $SNAPSHOT"
  rm -rf "$REPO_DIR"
  mkdir -p "$SNAPSHOT" "$REPO_DIR/refs"
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$AIPERF_VENV/bin/python" - "$REPO/scripts" "$SNAPSHOT" <<'PY'
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
import build_tiny_llama  # noqa: E402  (the same tokenizer the real-vLLM tests serve)

build_tiny_llama.build_tokenizer(Path(sys.argv[2]))
PY
  printf '%s' "$REV" > "$REPO_DIR/refs/main"
  touch "$SNAPSHOT/.complete"
fi
echo "$AIPERF_VENV/bin/aiperf $PDSCALE_CACHE/hf $TOKENIZER_NAME"
