#!/usr/bin/env bash
# Make sure a kubectl with `kubectl kustomize` (kustomize >= v4, kubectl >= 1.21) is on PATH: the tests build
# every overlay in manifests/ and examples/ with it (offline; no cluster is contacted). Installs the Debian
# package when kubectl is missing: `kubectl` where the configured repositories have it, else Debian's own
# `kubernetes-client`.
set -euo pipefail
if ! command -v kubectl >/dev/null 2>&1; then
  echo "pdscale: kubectl not found, installing it with apt-get..." >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      echo "pdscale: need root (or sudo) to apt-get install kubectl; install it yourself and re-run." >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  if ! $SUDO apt-get install -y -qq --no-install-recommends kubectl >/dev/null 2>&1; then
    $SUDO apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null || {
      echo "pdscale: could not apt-get install kubectl or kubernetes-client; install kubectl >= 1.21 and re-run." >&2
      exit 1
    }
  fi
fi
minor=$(kubectl version --client -o json 2>/dev/null | python3 -c 'import json,sys; print(int("".join(c for c in json.load(sys.stdin)["clientVersion"]["minor"] if c.isdigit())))' || echo 0)
if [ "$minor" -lt 21 ]; then
  echo "pdscale: $(command -v kubectl) is too old for the manifests' kustomizations (need >= 1.21, kustomize v4)." >&2
  exit 1
fi
