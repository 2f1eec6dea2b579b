"""sim.native: a compiled build of the engine runs only while it matches the sources and the interpreter.

No compiling here (``make test-sim-native`` builds and compares the compiled engine with plain Python); these tests
write the build's stamp by hand and check the rule that keeps an edited module from running stale compiled code.
"""

from __future__ import annotations

import json
import sys
import sysconfig
from pathlib import Path

import pytest

from sim import native


def write_stamp(build_dir: Path, **changes: object) -> None:
    stamp: dict[str, object] = {
        "python": sys.version,
        "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"),
        "sources": native.source_hashes(),
    }
    stamp.update(changes)
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "stamp.json").write_text(json.dumps(stamp))


def test_no_build_runs_plain_python(tmp_path: Path) -> None:
    assert native.usable_build(tmp_path / "absent") is None


def test_a_build_of_the_current_sources_for_this_interpreter_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(native.DISABLE_ENV, raising=False)
    write_stamp(tmp_path)
    assert native.usable_build(tmp_path) == tmp_path / "lib" / "sim"


def test_an_edited_module_or_import_makes_the_build_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.DISABLE_ENV, raising=False)
    sources = native.source_hashes()
    assert {f"sim/{m}.py" for m in native.NATIVE_MODULES} | set(native.IMPORTED_SOURCES) == set(sources)
    write_stamp(tmp_path, sources={**sources, "sim/scheduler.py": "0" * 64})
    assert native.usable_build(tmp_path) is None
    write_stamp(tmp_path, sources={**sources, "autoscaler/core/latency.py": "0" * 64})  # an import's edit counts too
    assert native.usable_build(tmp_path) is None


def test_another_interpreter_or_a_broken_stamp_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.DISABLE_ENV, raising=False)
    write_stamp(tmp_path, python="3.11.0 (another build)")
    assert native.usable_build(tmp_path) is None
    write_stamp(tmp_path, ext_suffix=".cpython-312-x86_64-linux-gnu.so")
    assert native.usable_build(tmp_path) is None
    (tmp_path / "stamp.json").write_text("{not json")
    assert native.usable_build(tmp_path) is None


def test_the_switch_turns_a_current_build_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_stamp(tmp_path)
    monkeypatch.setenv(native.DISABLE_ENV, "0")
    assert native.usable_build(tmp_path) is None
