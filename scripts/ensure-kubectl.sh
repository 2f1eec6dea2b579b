#!/usr/bin/env bash
# Make sure a kubectl with `kubectl kustomize` (kustomize >= v4, kubectl >= 1.21) is on PATH: the tests build
# every overlay in manifests/ and examples/ with it (offline; no cluster is contacted). Installs the Debian
# package when kubectl is missing: `kubectl` where the configured repositories have it, else Debian's own
# `kubernetes-client`.
set -euo pipefail
here="$(dirname "$0")"
if ! command -v kubectl >/dev/null 2>&1; then
  echo "pdscale: kubectl not found, installing it with apt-get..." >&2
  if ! "$here/apt-install.sh" kubectl 2>/dev/null; then
    "$here/apt-install.sh" kubernetes-client || {
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
