"""``python -m sim.native_cli build|status``: compile the engine with mypyc, or say whether the compiled one runs."""

from __future__ import annotations

import argparse
import os

from sim.native import BUILD_DIR, DISABLE_ENV, NATIVE_MODULES, build, usable_build


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m sim.native_cli", description=__doc__)
    ap.add_argument("action", choices=("build", "status"))
    ap.add_argument("--force", action="store_true", help="build even when the current build matches the sources")
    args = ap.parse_args(argv)
    if args.action == "build":
        if not args.force and usable_build() is not None:  # None too when turned off: then it builds
            print(f"sim.native: the build in {BUILD_DIR} matches the sources and this interpreter; nothing to do")
            return
        print(f"sim.native: compiled {len(NATIVE_MODULES)} modules into {build(BUILD_DIR)}")
        return
    lib = usable_build()
    if lib is not None:
        print(f"sim.native: the compiled engine in {lib.parent} runs (set {DISABLE_ENV}=0 to turn it off)")
    elif os.environ.get(DISABLE_ENV, "1") == "0":
        print(f"sim.native: turned off ({DISABLE_ENV}=0): the engine runs as plain Python")
    elif (BUILD_DIR / "stamp.json").is_file():
        print(f"sim.native: the build in {BUILD_DIR} is stale (sources or interpreter changed): plain Python runs")
    else:
        print("sim.native: no build (make sim-native): the engine runs as plain Python")


if __name__ == "__main__":
    main()
