#!/usr/bin/env bash
# apt-install.sh PACKAGE...: install Debian packages as root (or through sudo); exit 1 with a message when it
# cannot. Shared by the ensure-*.sh scripts that `make test` runs.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "pdscale: need root (or sudo) to apt-get install $*; install it yourself and re-run." >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
