#!/usr/bin/env bash
# Install Debian's `prometheus` package when no prometheus binary is on PATH.
# The tests start the real server on loopback; nothing else is configured here.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
echo "pdscale: prometheus not found, installing Debian's 'prometheus' package (apt-get)..." >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "pdscale: need root (or sudo) to apt-get install prometheus; install it yourself and re-run." >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && \
       $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; then
  echo "pdscale: could not install Debian's 'prometheus' package. Install a Prometheus >= 2.40 binary on PATH and re-run." >&2
  exit 1
fi
# The Debian package starts a system service; the tests run their own servers.
$SUDO systemctl stop prometheus >/dev/null 2>&1 || true
$SUDO service prometheus stop >/dev/null 2>&1 || true
command -v prometheus >/dev/null 2>&1 || { echo "pdscale: prometheus still not on PATH after install" >&2; exit 1; }
