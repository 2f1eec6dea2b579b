"""pdscale sim package.

When a current compiled build of the engine exists (``sim.native``, built by ``make sim-native``), its directory
goes ahead of the sources on this package's path, so ``import sim.engine`` loads the compiled module; a stale build
is ignored.
"""

from sim.native import usable_build as _usable_native_build

_native_sim_dir = _usable_native_build()
if _native_sim_dir is not None:
    import sys as _sys

    __path__.insert(0, str(_native_sim_dir))
    _sys.path.append(str(_native_sim_dir.parent))  # the C runtime module that the compiled modules share
