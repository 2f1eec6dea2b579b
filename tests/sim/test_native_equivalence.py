"""The mypyc-compiled engine (sim.native) against the same source as plain Python: identical, bit for bit.

``make test`` builds the engine first (``make sim-native``); ``make test-sim-native`` builds it and runs only this file.
Each side runs bench/bench_engine_equivalence.py's 27 cases (both Azure traces, agg and disagg, every router,
preemption under a small KV cache, table and roofline step models, scaling with scrapes mid-run, the per-step
reference, the ITL gap log) in its own interpreter; every array is compared exactly. ~1 minute on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from sim.native import DISABLE_ENV, usable_build

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "bench_engine_equivalence.py"


def dump(out: Path, native_on: bool) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO), **{DISABLE_ENV: "1" if native_on else "0"})
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--dump", str(out), "--root", str(REPO)],
        env=env, cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return proc.stderr.splitlines()[0]  # "  engine: <the file sim.engine was loaded from>"


def test_compiled_engine_is_identical_to_plain_python(tmp_path: Path) -> None:
    assert usable_build() is not None, "no current compiled build of the engine: run `make sim-native` first"
    python_engine = dump(tmp_path / "python.npz", native_on=False)
    compiled_engine = dump(tmp_path / "compiled.npz", native_on=True)
    assert python_engine.endswith("engine.py"), python_engine
    assert "build/sim-native" in compiled_engine and not compiled_engine.endswith(".py"), compiled_engine
    with np.load(tmp_path / "python.npz") as a, np.load(tmp_path / "compiled.npz") as b:
        keys = [k for k in a.files if not k.endswith("|cpu_s")]
        assert sorted(keys) == sorted(k for k in b.files if not k.endswith("|cpu_s"))
        differ = [k for k in keys if not np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f")]
    assert not differ, f"{len(differ)} of {len(keys)} arrays differ, e.g. {differ[:5]}"
    assert len(keys) > 1000  # the whole matrix ran
