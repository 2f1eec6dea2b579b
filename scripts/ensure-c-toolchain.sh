#!/usr/bin/env bash
# ensure-c-toolchain.sh PYTHON: a C compiler and PYTHON's own headers, which mypyc needs to compile the simulator's
# engine (`make sim-native`). Installs Debian's gcc and python3-dev when either is missing.
set -euo pipefail
PY="${1:-python3}"
include="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
have() { command -v cc >/dev/null 2>&1 && [ -f "$include/Python.h" ]; }
if have; then
  exit 0
fi
echo "pdscale: no C compiler or no $include/Python.h; installing Debian's gcc and python3-dev (apt-get)..." >&2
"$(dirname "$0")/apt-install.sh" gcc python3-dev || true
if ! have; then
  echo "pdscale: still no C compiler or no $include/Python.h for $PY: install a C compiler and that" \
       "interpreter's development headers, or run the engine as plain Python (it needs no build)." >&2
  exit 1
fi
