"""A latency profile file for a time-scaled live run: the one file the workers, the controller and the simulator
all load, so the three agree on the model.

``pdscale worker --time-scale K`` scales its profile in memory (``autoscaler.core.latency.scale_profile``); the
controller's policy loads ``spec.profile`` by name or path and knows nothing of K. ``write_scaled_profile``
writes the profile with every modelled duration multiplied by K (the step model's seconds: ``poly``
coefficients, ``table`` step times, and the ``host`` overheads when present) and the engine limits a run
overrides, as YAML the profile loader reads, then checks that what it wrote loads back to exactly
``scale_profile(original, K)`` with those limits.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from autoscaler.core.latency import LatencyProfile, scale_profile
from autoscaler.profiles import load_profile, load_profile_file, profile_path

ENGINE_FIELDS = {"max_num_seqs": "max_num_seqs", "max_num_batched_tokens": "max_num_batched_tokens"}


def _scale_numbers(node: Any, factor: float) -> Any:
    if isinstance(node, Mapping):
        return {k: _scale_numbers(v, factor) for k, v in node.items()}
    if isinstance(node, list):
        return [_scale_numbers(v, factor) for v in node]
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return float(node) * factor
    return node


def scaled_profile_doc(name_or_path: str, factor: float, *, engine: Mapping[str, int] | None = None,
                       kv_capacity_tokens: int | None = None) -> dict[str, Any]:  # fmt: skip
    """The YAML document of ``name_or_path`` with its durations times ``factor`` and ``engine`` limits set."""
    if not factor > 0:
        raise ValueError(f"time scale must be > 0, got {factor}")
    doc = yaml.safe_load(profile_path(name_or_path).read_text(encoding="utf-8"))
    out = copy.deepcopy(doc)
    step = out.get("step") or {}
    kind = step.get("type")
    if kind == "poly":
        for leg in ("prefill", "decode"):
            step[leg] = _scale_numbers(step.get(leg) or {}, factor)
    elif kind == "table":
        step["prefill"]["step_s"] = _scale_numbers(step["prefill"]["step_s"], factor)
        step["decode"]["step_s"] = _scale_numbers(step["decode"]["step_s"], factor)
    else:
        raise ValueError(f"{name_or_path}: only poly and table step models can be written time-scaled, not {kind!r}")
    if "host" in out:
        out["host"] = _scale_numbers(out["host"], factor)
    for key, value in (engine or {}).items():
        if key not in ENGINE_FIELDS:
            raise ValueError(f"unknown engine limit {key!r} (known: {', '.join(ENGINE_FIELDS)})")
        out.setdefault("engine", {})[key] = int(value)
    if kv_capacity_tokens is not None:
        out.setdefault("kv", {})["capacity_tokens"] = int(kv_capacity_tokens)
    out["name"] = f"{doc.get('name', Path(name_or_path).stem)}@x{factor:g}"
    out["description"] = f"{doc.get('description', '')} (every modelled duration x {factor:g}: a time-scaled live run)"
    return dict(out)


def write_scaled_profile(path: Path, name_or_path: str, factor: float, *, engine: Mapping[str, int] | None = None,
                         kv_capacity_tokens: int | None = None) -> LatencyProfile:  # fmt: skip
    """Write the scaled profile to ``path`` and return it as loaded back (checked against ``scale_profile``)."""
    path.write_text(yaml.safe_dump(scaled_profile_doc(name_or_path, factor, engine=engine,
                                                      kv_capacity_tokens=kv_capacity_tokens), sort_keys=False))
    written = load_profile_file(path)
    expected = scale_profile(load_profile(name_or_path), factor)
    overrides: dict[str, Any] = {ENGINE_FIELDS[k]: int(v) for k, v in (engine or {}).items()}
    if kv_capacity_tokens is not None:
        overrides["kv_capacity_tokens"] = int(kv_capacity_tokens)
    expected = dataclasses.replace(expected, **overrides)
    for probe_tokens in (1.0, 512.0, float(written.max_num_batched_tokens)):
        got, want = written.step.prefill_step_s(probe_tokens), expected.step.prefill_step_s(probe_tokens)
        if abs(got - want) > 1e-9 * max(1.0, want):
            raise ValueError(f"{path}: prefill step {got} != {want} at {probe_tokens} tokens")
    for batch in (1, max(1, written.max_num_seqs)):
        got, want = written.step.decode_step_s(batch, batch * 1024.0), expected.step.decode_step_s(batch, batch * 1024.0)
        if abs(got - want) > 1e-9 * max(1.0, want):
            raise ValueError(f"{path}: decode step {got} != {want} at batch {batch}")
    if (written.max_num_seqs, written.max_num_batched_tokens, written.kv_capacity_tokens) != (
        expected.max_num_seqs, expected.max_num_batched_tokens, expected.kv_capacity_tokens
    ):
        raise ValueError(f"{path}: engine limits differ from the requested ones")
    return written
