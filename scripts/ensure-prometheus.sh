#!/usr/bin/env bash
# Install Debian's `prometheus` package when no prometheus binary is on PATH.
# The tests start the real server on loopback; nothing else is configured here.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
echo "pdscale: prometheus not found, installing Debian's 'prometheus' package (apt-get)..." >&2
if ! "$(dirname "$0")/apt-install.sh" prometheus; then
  echo "pdscale: could not install Debian's 'prometheus' package. Install a Prometheus >= 2.40 binary on PATH and re-run." >&2
  exit 1
fi
# The Debian package starts a system service; the tests run their own servers.
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO systemctl stop prometheus >/dev/null 2>&1 || true
$SUDO service prometheus stop >/dev/null 2>&1 || true
command -v prometheus >/dev/null 2>&1 || { echo "pdscale: prometheus still not on PATH after install" >&2; exit 1; }
