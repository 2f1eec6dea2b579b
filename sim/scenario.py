"""Simulation scenarios: what traffic, which model profile, how the cluster starts and behaves, which policy.

A scenario YAML file (camelCase keys, every one optional)::

    workload:                     # exactly one of trace | generator | builtin; none = the embedded default
      trace: ../shared/traces/azure_llm_2023_conv.csv
      window: [0, 1800]           # seconds of trace time (optional)
      maxPromptTokens: 16384      # optional caps
      maxOutputTokens: 4096
      # generator: "poisson:rate=5,duration=600"
      # generator: "closed:users=8,duration=600,think_s=1"   # a closed loop: N users, each waits for its answer
      # builtin: default | demo
    rateScale: 1.0                # arrivals K times denser
    scaleMode: compress           # compress (time / K) | replicate (K shifted copies, same length)
    profile: llama-3.1-8b-h100-tp1  # name or path; default: autoscaler.profile
    mode: disagg                  # or agg (one pool, the decode pool)
    prefill: 2                    # initial ready replicas
    decode: 2
    startupSeconds: 120           # pod startup, the cluster's truth; also the autoscaler's belief
                                  # (spec.pod_startup_s) unless autoscaler.podStartupSeconds says otherwise
    startupJitter: fixed          # or uniform:0.5 / lognormal:0.3
    tickSeconds: 15
    scrapeIntervalSeconds: 15
    windowSeconds: 60             # summary window
    drainSeconds: 900             # after the last arrival, how long in-flight work may finish
    seed: 0
    router: least-outstanding-tokens
    policy: static                # or {name: pdscale, params: {...}}
    autoscaler: {...}             # the DisaggregatedAutoscaler spec, parsed by autoscaler.config

Relative paths (trace, profile) are resolved against the scenario file's folder. Errors name the file and field.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autoscaler.core.latency import LatencyProfile
from autoscaler.core.spec import SLO, AutoscalerSpec
from autoscaler.profiles import load_profile
from sim.workload import (
    REPLICATE_SPREAD_S,
    ClosedLoopSpec,
    Workload,
    default_workload,
    demo_workload,
    generate,
    is_closed_loop,
    load_trace,
    parse_closed_loop,
    replicate,
)

MODES = ("disagg", "agg")
ROUTERS = ("least-outstanding-tokens", "round-robin", "least-kv", "central-fcfs")
_TOP_KEYS = frozenset(
    {
        "name", "workload", "rateScale", "scaleMode", "profile", "mode", "prefill", "decode", "startupSeconds", "startupJitter",
        "tickSeconds", "scrapeIntervalSeconds", "windowSeconds", "drainSeconds", "seed", "router", "policy",
        "autoscaler",
    }
)  # fmt: skip
_WORKLOAD_KEYS = frozenset({"trace", "generator", "builtin", "window", "maxPromptTokens", "maxOutputTokens"})


class ScenarioError(ValueError):
    """A scenario that cannot be built; the message names the file (or 'flags') and the field."""


# A run steps through every controller tick and every scrape: past a million of either it is refused up front
# (a trace with a 31-year gap would otherwise tick 67 million times; a 1e-12 s tick would allocate terabytes).
MAX_STEPS = 1_000_000


def _string_keys(value: Any, where: str) -> None:
    """YAML allows any scalar as a key (``1: x``); every mapping the scenario reads is keyed by names."""
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise ScenarioError(f"{where}: keys must be strings, got {type(key).__name__} {key!r}")


@dataclass(frozen=True, kw_only=True)
class Scenario:
    workload: Workload
    profile: LatencyProfile
    spec: AutoscalerSpec
    mode: str = "disagg"
    initial_prefill: int
    initial_decode: int
    startup_s: float = 120.0
    startup_jitter: str = "fixed"
    tick_s: float = 15.0
    scrape_interval_s: float = 15.0
    window_s: float = 60.0
    seed: int = 0
    router: str = "least-outstanding-tokens"
    # extras beyond the shared contract
    name: str = "scenario"
    policy: str = "static"
    policy_params: Mapping[str, Any] = field(default_factory=dict)
    drain_s: float = 900.0
    # A closed loop (``closed:`` generator): its users send ``workload``'s requests (arrival times unused), each
    # when its previous answer came back; None for an open-loop workload, whose arrival times are given.
    closed_loop: ClosedLoopSpec | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ScenarioError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("tick_s", "scrape_interval_s", "window_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ScenarioError(f"{name} must be a positive number of seconds, got {value!r}")
        if not (math.isfinite(self.startup_s) and self.startup_s >= 0):
            raise ScenarioError(f"startup_s must be >= 0, got {self.startup_s!r}")
        if not (math.isfinite(self.drain_s) and self.drain_s >= 0):
            raise ScenarioError(f"drain_s must be >= 0, got {self.drain_s!r}")
        if self.initial_prefill < 0 or self.initial_decode < 1:
            raise ScenarioError(
                f"initial replicas must be prefill >= 0 and decode >= 1, got {self.initial_prefill}/"
                f"{self.initial_decode}"
            )
        if self.mode == "disagg" and self.initial_prefill < 1:
            raise ScenarioError("disaggregated mode needs at least one initial prefill replica")
        if self.mode == "agg" and self.initial_prefill != 0:
            raise ScenarioError("aggregated mode has no prefill pool: initial prefill replicas must be 0")


def read_scenario_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a scenario YAML file, with relative paths resolved against its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{p}: no such scenario file") from None
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read: {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{p}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ScenarioError(f"{p}: top level must be a mapping, got {type(raw).__name__}")
    raw = dict(raw)
    base = p.parent
    wl = raw.get("workload")
    if isinstance(wl, dict) and isinstance(wl.get("trace"), str):
        raw["workload"] = {**wl, "trace": _resolve(base, wl["trace"])}
    if isinstance(raw.get("profile"), str):
        candidate = base / raw["profile"]
        if candidate.suffix in (".yaml", ".yml") and candidate.exists():
            raw["profile"] = str(candidate)
    raw.setdefault("name", p.stem)
    return raw


def _resolve(base: Path, value: str) -> str:
    q = Path(value)
    return str(q if q.is_absolute() else base / q)


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    return build_scenario(read_scenario_file(p), source=str(p))


class _Fields:
    """Typed reads from the raw mapping that fail with '<source>: field <name>: ...'."""

    def __init__(self, raw: Mapping[str, Any], source: str) -> None:
        self.raw = raw
        self.source = source

    def error(self, name: str, problem: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: field {name}: {problem}")

    def number(self, name: str, default: float, *, minimum: float = 0.0, strict: bool = False) -> float:
        value = self.raw.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.error(name, f"must be a number, got {value!r}")
        if value < minimum or (strict and value == minimum):
            raise self.error(name, f"must be {'>' if strict else '>='} {minimum:g}, got {value!r}")
        return float(value)

    def integer(self, name: str, default: int | None, *, minimum: int = 0) -> int | None:
        value = self.raw.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"must be an integer, got {value!r}")
        if value < minimum:
            raise self.error(name, f"must be >= {minimum}, got {value!r}")
        return int(value)

    def string(self, name: str, default: str, choices: tuple[str, ...] | None = None) -> str:
        value = self.raw.get(name, default)
        if not isinstance(value, str) or not value:
            raise self.error(name, f"must be a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.error(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value


def build_scenario(raw: Mapping[str, Any], source: str = "scenario") -> Scenario:
    """Build a ``Scenario`` from a raw mapping (a parsed file, possibly with flag overrides applied)."""
    f = _Fields(raw, source)
    _string_keys(raw, f"{source}: top level")
    _string_keys(raw.get("workload"), f"{source}: field workload")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ScenarioError(
            f"{source}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_TOP_KEYS))}"
        )
    seed = f.integer("seed", 0)
    assert seed is not None
    mode = f.string("mode", "disagg", MODES)
    spec = _spec(raw.get("autoscaler"), source)
    startup_s = f.number("startupSeconds", 120.0)
    section = raw.get("autoscaler") or {}
    if "podStartupSeconds" not in section:  # the autoscaler believes the cluster unless told otherwise
        spec = dataclasses.replace(spec, pod_startup_s=startup_s)
    if mode == "agg":
        spec = dataclasses.replace(
            spec, prefill=dataclasses.replace(spec.prefill, min_replicas=0, max_replicas=0)
        )
    scale_mode = raw.get("scaleMode", "compress")
    if scale_mode not in SCALE_MODES:
        raise f.error("scaleMode", f"must be one of {', '.join(SCALE_MODES)}, got {scale_mode!r}")
    workload, closed_loop = _workload(
        raw.get("workload"), f.number("rateScale", 1.0, strict=True), scale_mode, seed, f
    )
    profile_name = f.string("profile", spec.profile)
    profile = _profile(profile_name, f)
    policy, params = _policy(raw.get("policy", "static"), f)
    prefill = f.integer("prefill", 0 if mode == "agg" else max(1, spec.prefill.min_replicas))
    decode = f.integer("decode", max(1, spec.decode.min_replicas), minimum=1)
    assert prefill is not None and decode is not None
    if mode == "agg" and prefill != 0:
        raise f.error(
            "prefill", "aggregated mode (mode: agg) has no prefill pool; set prefill to 0 or omit it"
        )
    if mode == "disagg" and prefill < 1:
        raise f.error("prefill", "disaggregated mode needs at least 1 prefill replica")
    fields: dict[str, Any] = dict(
        startup_jitter=f.string("startupJitter", "fixed"),
        tick_s=f.number("tickSeconds", 15.0, strict=True),
        scrape_interval_s=f.number("scrapeIntervalSeconds", 15.0, strict=True),
        window_s=f.number("windowSeconds", 60.0, strict=True),
        router=f.string("router", "least-outstanding-tokens", ROUTERS),
        name=f.string("name", "scenario"),
        drain_s=f.number("drainSeconds", 900.0),
    )
    _check_steps(workload, fields["tick_s"], fields["scrape_interval_s"], fields["drain_s"], source)
    try:
        return Scenario(
            workload=workload,
            profile=profile,
            spec=spec,
            mode=mode,
            initial_prefill=prefill,
            initial_decode=decode,
            startup_s=startup_s,
            seed=seed,
            policy=policy,
            policy_params=params,
            closed_loop=closed_loop,
            **fields,
        )
    except ScenarioError as exc:
        raise ScenarioError(f"{source}: {exc}") from None


def _check_steps(workload: Workload, tick_s: float, scrape_s: float, drain_s: float, source: str) -> None:
    """Refuse a run with more than ``MAX_STEPS`` controller ticks or scrapes, before replay allocates them."""
    span_s = workload.duration_s
    for what, count, field_name, step_s in (
        ("controller ticks", span_s / tick_s + 1, "tickSeconds", tick_s),
        ("scrapes", (span_s + drain_s) / scrape_s + 1, "scrapeIntervalSeconds", scrape_s),
    ):
        if not count <= MAX_STEPS:
            raise ScenarioError(
                f"{source}: the workload spans {span_s:,.0f} s ({span_s / 86400:,.1f} days): {count:,.0f} {what} "
                f"at {step_s:g} s exceed the limit of {MAX_STEPS:,} per run; cut the workload with workload.window "
                f"(or a shorter trace or generator duration) or raise {field_name}"
            )


def with_slo_targets(
    scenario: Scenario, *, ttft_p99_s: float | None = None, itl_p99_s: float | None = None
) -> Scenario:
    """Override the SLOs with p99 targets (the CLI's --ttft-p99/--itl-p99)."""
    spec = scenario.spec
    for name, value in (("ttft_p99_s", ttft_p99_s), ("itl_p99_s", itl_p99_s)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ScenarioError(f"{name} must be a positive number of seconds, got {value!r}")
    if ttft_p99_s is not None:
        spec = dataclasses.replace(spec, ttft=SLO(percentile=0.99, target_s=ttft_p99_s))
    if itl_p99_s is not None:
        spec = dataclasses.replace(spec, itl=SLO(percentile=0.99, target_s=itl_p99_s))
    return dataclasses.replace(scenario, spec=spec)


def _spec(section: Any, source: str) -> AutoscalerSpec:
    """H1's ``autoscaler.config.spec_from_dict`` parses the CRD-shaped section; errors name file and field."""
    from autoscaler.config import spec_from_dict

    if section is None:
        return AutoscalerSpec()
    if not isinstance(section, Mapping):
        raise ScenarioError(f"{source}: field autoscaler: must be a mapping, got {type(section).__name__}")
    try:
        return spec_from_dict(dict(section), source=source, path="autoscaler")
    except ValueError as exc:  # ConfigError: "<source>: autoscaler.<field>: <reason>"
        raise ScenarioError(str(exc)) from None


SCALE_MODES = ("compress", "replicate")


def _rate_scaled(w: Workload, rate_scale: float, scale_mode: str, seed: int) -> Workload:
    """``compress``: time divided by K (the trace gets K times shorter); ``replicate``: K shifted copies over the
    same span (``sim.workload.replicate``), which keeps an hour-long trace an hour long for autoscaling studies."""
    if rate_scale == 1.0:
        return w
    if scale_mode == "compress":
        return w.scaled(rate_scale)
    return replicate(w, rate_scale, spread_s=REPLICATE_SPREAD_S, seed=seed)


def _workload(
    section: Any, rate_scale: float, scale_mode: str, seed: int, f: _Fields
) -> tuple[Workload, ClosedLoopSpec | None]:
    if section is None:
        section = {"builtin": "default"}
    if isinstance(section, str):
        section = {"builtin": section} if section in ("default", "demo") else {"generator": section}
    if not isinstance(section, Mapping):
        raise f.error("workload", f"must be a mapping with trace, generator or builtin, got {section!r}")
    unknown = sorted(set(section) - _WORKLOAD_KEYS)
    if unknown:
        raise f.error(
            "workload", f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_WORKLOAD_KEYS))}"
        )
    kinds = [k for k in ("trace", "generator", "builtin") if k in section]
    if len(kinds) > 1:
        raise f.error("workload", f"give only one of trace, generator, builtin (got {', '.join(kinds)})")
    kind = kinds[0] if kinds else "builtin"
    value = section.get(kind, "default")
    if not isinstance(value, str) or not value:
        raise f.error(f"workload.{kind}", f"must be a non-empty string, got {value!r}")
    window = section.get("window")
    caps = {}
    for key, arg in (("maxPromptTokens", "max_prompt_tokens"), ("maxOutputTokens", "max_output_tokens")):
        cap = section.get(key)
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise f.error(f"workload.{key}", f"must be a positive integer, got {cap!r}")
        caps[arg] = cap
    if window is not None and (
        not isinstance(window, list | tuple)
        or len(window) != 2
        or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in window)
        or not window[0] < window[1]
    ):
        raise f.error("workload.window", f"must be [start_s, end_s] with start < end, got {window!r}")
    try:
        if kind == "generator" and is_closed_loop(value):
            return _closed_loop(value, section, rate_scale, seed, f)
        if kind == "trace":
            return _rate_scaled(
                load_trace(
                    value, window_s=(float(window[0]), float(window[1])) if window is not None else None, **caps
                ),
                rate_scale,
                scale_mode,
                seed,
            ), None
        if window is not None:
            raise f.error("workload.window", "applies to traces only")
        if kind == "generator":
            w = generate(value, seed=seed)
        elif value == "default":
            w = default_workload(seed)
        elif value == "demo":
            w = demo_workload(seed)
        else:
            raise f.error("workload.builtin", f"must be 'default' or 'demo', got {value!r}")
        w = _rate_scaled(w, rate_scale, scale_mode, seed)
        if caps["max_prompt_tokens"] is not None or caps["max_output_tokens"] is not None:
            w = w.capped(caps["max_prompt_tokens"], caps["max_output_tokens"])
        return w, None
    except ScenarioError:
        raise
    except ValueError as exc:  # TraceError / SpecError name the file, line and field themselves
        raise f.error(f"workload.{kind}", str(exc)) from None


def _closed_loop(
    spec: str, section: Mapping[str, Any], rate_scale: float, seed: int, f: _Fields
) -> tuple[Workload, ClosedLoopSpec]:
    """A ``closed:`` generator: its users set the pace, so rate scaling and workload-level caps do not apply."""
    if rate_scale != 1.0:
        raise f.error(
            "rateScale", "does not apply to a closed-loop workload (its users set the pace): change users= instead"
        )
    for key, spec_key in (("maxPromptTokens", "max_prompt"), ("maxOutputTokens", "max_output")):
        if section.get(key) is not None:
            raise f.error(f"workload.{key}", f"a closed-loop generator takes its cap in the spec: {spec_key}=K")
    loop = parse_closed_loop(spec, seed=seed)
    return loop.workload(), loop


def _profile(name: str, f: _Fields) -> LatencyProfile:
    try:
        profile = load_profile(name)
    except (ValueError, KeyError, OSError) as exc:
        raise f.error("profile", str(exc)) from None
    assert isinstance(profile, LatencyProfile)
    return profile


def _policy(value: Any, f: _Fields) -> tuple[str, dict[str, Any]]:
    if isinstance(value, str) and value:
        return value, {}
    if isinstance(value, Mapping):
        name = value.get("name")
        params = value.get("params", {})
        extra = sorted(set(value) - {"name", "params"})
        if extra:
            raise f.error("policy", f"unknown key(s) {', '.join(extra)}; known: name, params")
        if not isinstance(name, str) or not name:
            raise f.error("policy.name", f"must be a non-empty string, got {name!r}")
        if not isinstance(params, Mapping):
            raise f.error("policy.params", f"must be a mapping, got {params!r}")
        _string_keys(params, f"{f.source}: field policy.params")
        return name, dict(params)
    raise f.error("policy", f"must be a policy name or {{name, params}}, got {value!r}")
