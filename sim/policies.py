"""Registry of autoscaling policies the simulator can run: pdscale's own and the baselines.

A factory takes the latency profile, the autoscaler spec and optional keyword parameters and returns a
``Policy``. Modules register with ``register_policy(name, factory)`` at import; every module inside the
``sim.baselines`` package is imported on the first lookup, so a baseline only has to live there. The registry
is the one piece of module-level mutable state here, on purpose: it is a plugin table filled at import time.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from autoscaler.core.latency import LatencyProfile
from autoscaler.core.spec import AutoscalerSpec
from autoscaler.ports import Policy

PolicyFactory = Callable[..., Policy[Any]]  # (profile, spec, **params) -> Policy

POLICIES: dict[str, PolicyFactory] = {}
_discovered: list[bool] = []  # non-empty once sim.baselines was scanned


def register_policy(name: str, factory: PolicyFactory) -> None:
    """Add ``factory`` under ``name``; registering a different factory under a taken name is an error."""
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"policy name {name!r} must be non-empty letters, digits, '-' or '_'")
    existing = POLICIES.get(name)
    if existing is not None and existing is not factory:
        raise ValueError(f"policy {name!r} is already registered by {existing.__module__}")
    POLICIES[name] = factory


def _discover() -> None:
    if _discovered:
        return
    _discovered.append(True)
    package = importlib.import_module("sim.baselines")
    for module in pkgutil.iter_modules(package.__path__, prefix="sim.baselines."):
        importlib.import_module(module.name)


def policy_names() -> list[str]:
    _discover()
    return sorted(POLICIES)


def make_policy(name: str, profile: LatencyProfile, spec: AutoscalerSpec, **params: Any) -> Policy[Any]:
    """Build the policy registered as ``name``; an unknown name raises ``KeyError`` listing the known ones."""
    _discover()
    try:
        factory = POLICIES[name]
    except KeyError:
        raise KeyError(f"unknown policy {name!r}; known: {', '.join(sorted(POLICIES)) or 'none'}") from None
    return factory(profile, spec, **params)


# pdscale's own policy lives in the pure core (autoscaler.core.policy), which must not import sim: register it here.
register_policy("pdscale", importlib.import_module("autoscaler.core.policy").make_pdscale_policy)
