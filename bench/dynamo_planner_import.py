"""Import NVIDIA Dynamo's planner (ai-dynamo 1.6.1) where its ``aisimulate_core`` dependency cannot be installed.

Dynamo's planner package imports two names from ``aisimulate_core.sdk`` at module scope
(``dynamo/planner/core/perf_model/ais_adapter.py``: ``ForwardPassPerfModelConfig``; ``.../engine_query.py``:
``RustForwardPassPerfModel``). That module ships in the ``aisimulate`` wheel, which PyPI serves only as a
wheel_stub sdist that fetches the real wheel from NVIDIA's own index at build time: unreachable here
(``scripts/setup-dynamo-bench.sh``). Without it nothing under ``dynamo.planner`` imports at all.

``install_missing_aisimulate_core()`` registers an import-only placeholder for those two names: any use (a call,
``best_available``, ``from_legacy_engine_config``) raises ``ImportError``. It computes nothing, so whatever
Dynamo's planner decides with it installed is Dynamo's own code: the paths that need the AIS perf model fail
loudly. Measured with ai-dynamo 1.6.1: ``optimization_target`` ``throughput`` / ``latency`` (load scaling on
the forward-pass metrics against static thresholds, ``dynamo/planner/core/load_scaling.py``) never touch it;
``sla`` builds ``PlannerEnginePerfModel`` in ``PlannerScalingState.__init__`` and so raises at construction.
"""

from __future__ import annotations

import sys
import types
from typing import Any, NoReturn

PLACEHOLDER_MODULES = ("aisimulate_core", "aisimulate_core.sdk")
MISSING_MESSAGE = (
    "aisimulate_core (PyPI aisimulate==0.13.0) is not installed: PyPI serves only a wheel_stub that downloads "
    "the wheel from NVIDIA's package index, unreachable here; Dynamo's AIS perf model cannot run"
)


def _missing(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise ImportError(MISSING_MESSAGE)


class _MissingAisClass:
    """Stands for an ``aisimulate_core.sdk`` class: constructing it or calling its factories raises."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _missing()

    best_available = staticmethod(_missing)
    from_legacy_engine_config = staticmethod(_missing)


def install_missing_aisimulate_core() -> bool:
    """Register the placeholder unless a real ``aisimulate_core`` imports; True when the placeholder is in use."""
    try:
        import aisimulate_core.sdk  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        pass
    else:
        return False
    package = types.ModuleType("aisimulate_core")
    sdk = types.ModuleType("aisimulate_core.sdk")
    sdk.ForwardPassPerfModelConfig = _MissingAisClass  # type: ignore[attr-defined]
    sdk.RustForwardPassPerfModel = _MissingAisClass  # type: ignore[attr-defined]
    package.sdk = sdk  # type: ignore[attr-defined]
    package.__path__ = []  # a package, so "aisimulate_core.sdk.x" fails with ImportError, not AttributeError
    sys.modules["aisimulate_core"] = package
    sys.modules["aisimulate_core.sdk"] = sdk
    return True


if __name__ == "__main__":  # scripts/setup-dynamo-bench.sh checks the bench environment with this
    placeholder = install_missing_aisimulate_core()
    import dynamo._core  # type: ignore[import-not-found]
    import dynamo.planner.offline.replay_adapter  # type: ignore[import-not-found]  # noqa: F401

    print(f"dynamo mocker and planner import ({'placeholder' if placeholder else 'real'} aisimulate_core)")
