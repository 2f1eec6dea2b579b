"""The simulator's engine compiled by mypyc (``make sim-native``, which ``make test`` and ``make demo`` run): the same source, about twice as fast.

The engine's modules (``NATIVE_MODULES``: the event loop, schedulers, router, cluster, counters, records) are
checked by ``mypy --strict`` already, so mypyc (shipped with mypy) compiles them to C extensions unchanged. The build
goes to ``build/sim-native/`` beside the sources, never over them, with the sha256 of every compiled source (and of
the project modules they import) and the interpreter it was built for. ``sim/__init__`` asks ``usable_build()``
whether that build may run: only when every hash matches the current source and the interpreter is the same, so an
edited module never runs stale compiled code (it runs as plain Python until the next build). ``PDSCALE_SIM_NATIVE=0``
turns the build off.

Results are identical bit for bit (``make test-sim-native``; ``bench/bench_engine_equivalence.py`` run with and
without it); ``bench/bench_sim_speed.py --native`` measures both side by side.

    .venv/bin/python -m sim.native_cli build      # or: make sim-native (needs a C compiler and the Python headers)
    .venv/bin/python -m sim.native_cli status
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

NATIVE_MODULES = ("request", "events", "counters", "records", "scheduler", "skipping", "router", "cluster", "engine")
# what the compiled modules import from the rest of the project: mypyc may build their types and constants in, so an
# edit there makes the build stale too
IMPORTED_SOURCES = ("autoscaler/core/buckets.py", "autoscaler/core/latency.py", "autoscaler/core/types.py",
                    "sim/workload.py")  # fmt: skip
SIM_DIR = Path(__file__).resolve().parent
REPO = SIM_DIR.parent
BUILD_DIR = REPO / "build" / "sim-native"
DISABLE_ENV = "PDSCALE_SIM_NATIVE"  # "0": run the engine as plain Python even when a build is there


def _ext_suffix() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX"))


def source_hashes() -> dict[str, str]:
    """sha256 of each compiled module's source and of what they import from the project, as they are now."""
    import hashlib

    paths = [f"sim/{m}.py" for m in NATIVE_MODULES] + list(IMPORTED_SOURCES)
    return {p: hashlib.sha256((REPO / p).read_bytes()).hexdigest() for p in paths}


def _stamp() -> dict[str, object]:
    return {"python": sys.version, "ext_suffix": _ext_suffix(), "sources": source_hashes()}


def usable_build(build_dir: Path = BUILD_DIR) -> Path | None:
    """The compiled ``sim`` directory to put ahead of the sources, or None (no build, stale, other interpreter,
    or turned off). Cheap when there is no build: one stat (``import sim`` asks it; the CLI must start fast)."""
    stamp_file = build_dir / "stamp.json"
    if os.environ.get(DISABLE_ENV, "1") == "0" or not stamp_file.is_file():
        return None
    import json

    try:
        stamp = json.loads(stamp_file.read_text())
    except (OSError, ValueError):
        return None
    current = _stamp()
    if any(stamp.get(key) != current[key] for key in current):
        return None
    return build_dir / "lib" / "sim"


def is_active() -> bool:
    """True when this process's engine modules are the compiled ones."""
    import sim.engine

    return not str(sim.engine.__file__).endswith(".py")


def build(build_dir: Path = BUILD_DIR) -> Path:
    """Compile ``NATIVE_MODULES`` with mypyc into ``build_dir`` (replacing an earlier build); returns it."""
    import json
    import shutil
    import subprocess
    import tempfile

    mypyc = Path(sys.executable).with_name("mypyc")
    if not mypyc.exists():
        raise SystemExit(f"sim.native: {mypyc} not found: mypyc comes with mypy (pip install '.[test]')")
    stamp = _stamp()  # the sources as they are when the build starts
    with tempfile.TemporaryDirectory(prefix="pdscale-sim-native-") as tmp:
        tree = Path(tmp)
        # mypyc type-checks what the modules import: the packages and the project's mypy settings go along
        for package in ("sim", "autoscaler"):
            shutil.copytree(REPO / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(REPO / "setup.cfg", tree / "setup.cfg")
        sources = [f"sim/{m}.py" for m in NATIVE_MODULES]
        proc = subprocess.run([str(mypyc), *sources], cwd=tree, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"sim.native: mypyc failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
        lib = build_dir / "lib"
        if build_dir.exists():
            shutil.rmtree(build_dir)
        (lib / "sim").mkdir(parents=True)
        suffix = _ext_suffix()
        for m in NATIVE_MODULES:
            shutil.copy2(tree / "sim" / f"{m}{suffix}", lib / "sim" / f"{m}{suffix}")
        for shared in tree.glob(f"*__mypyc{suffix}"):  # the C runtime the compiled modules share
            shutil.copy2(shared, lib / shared.name)
    (build_dir / "stamp.json").write_text(json.dumps(stamp, indent=1))
    return build_dir
