"""One loader from plain mappings (a DisaggregatedAutoscaler ``spec``, a scenario's ``autoscaler:`` section, a
YAML file) to :class:`autoscaler.core.spec.AutoscalerSpec`, and back with :func:`spec_to_dict`.

Keys are camelCase as in the CRD; a missing field takes the dataclass default; anything wrong raises
:class:`ConfigError` whose message names the source, the field path and, for files, the line. Behavior follows
the HPA ``autoscaling/v2`` shapes and defaulting (a ``scaleUp``/``scaleDown`` block with missing fields gets
HPA's defaults for them) and its validation limits (stabilization window 0..3600 s, policy period 1..1800 s,
policy value > 0, at least one policy).

Accepted shape (every key optional)::

    prefill / decode:  {minReplicas, maxReplicas, gpusPerReplica, scaleTargetRef: {apiVersion, kind, name}}
    slo:               {ttft: {percentile, targetSeconds}, itl: {percentile, targetSeconds}}
    gpuBudget, podStartupSeconds, mode (active|advisory), forecaster (last|holt|seasonal), profile
    behavior:          {scaleUp|scaleDown: {stabilizationWindowSeconds, selectPolicy (Max|Min|Disabled),
                        policies: [{type (Pods|Percent), value, periodSeconds}]}}
    metrics:           {source (vllm|dynamo|llm-d|custom), selector: {matchLabels: {k: v}}, windowSeconds,
                        proxy, queries: {signal: PromQL template}, maxFailureRatio (0 < r <= 1)}

A percentile is a fraction in (0, 1) (``0.99``), a percent in (1, 100) (``99``, ``99.9``) or a string
(``"p99"``, ``"P99.9"``, ``"99%"``, ``"0.99"``).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml

from autoscaler.core.spec import (
    SLO,
    AutoscalerSpec,
    Behavior,
    Forecaster,
    MetricsSpec,
    Mode,
    PolicyType,
    PoolSpec,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
    TargetRef,
    default_scale_up,
    pdscale_default_behavior,
)

KIND = "DisaggregatedAutoscaler"
METRIC_SOURCES: tuple[str, ...] = ("vllm", "dynamo", "llm-d", "custom")
MAX_STABILIZATION_WINDOW_S = 3600  # HPA validation limit
MAX_POLICY_PERIOD_S = 1800  # HPA validation limit

# Kubernetes label syntax (apimachinery validation: IsQualifiedName / IsValidLabelValue).
_K8S_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_SUBDOMAIN = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
_K8S_LABEL_KEY_RE = re.compile(rf"^(?:(?P<prefix>{_DNS_SUBDOMAIN})/)?(?P<name>{_K8S_NAME})$")
_K8S_LABEL_VALUE_RE = re.compile(rf"^(?:{_K8S_NAME})?$")
_PROM_LABEL_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PERCENTILE_RE = re.compile(r"^(?:p(?P<p>[0-9.]+)|(?P<pct>[0-9.]+)%|(?P<num>[0-9.eE+-]+))$")

PathPart = str | int
FieldPath = tuple[PathPart, ...]
E = TypeVar("E", bound=StrEnum)


class ConfigError(ValueError):
    """Bad configuration. ``field`` is the dotted path (``spec.decode.minReplicas``), ``reason`` the problem,
    ``source`` the file or object it came from (may be None), ``line`` the 1-based line in that file."""

    def __init__(self, field: str, reason: str, *, source: str | None = None, line: int | None = None) -> None:
        self.field = field
        self.reason = reason
        self.source = source
        self.line = line
        where = source or ""
        if line is not None:
            where = f"{where}:{line}" if where else f"line {line}"
        location = f"{where}: " if where else ""
        super().__init__(f"{location}{field}: {reason}" if field else f"{location}{reason}")


class _Invalid(Exception):
    """Internal: a problem at ``parts``, turned into ConfigError once the source and root path are known."""

    def __init__(self, parts: FieldPath, reason: str) -> None:
        super().__init__(reason)
        self.parts = parts
        self.reason = reason


def _fail(parts: FieldPath, reason: str) -> NoReturn:
    raise _Invalid(parts, reason)


def format_path(root: str, parts: Sequence[PathPart]) -> str:
    """``("decode", "minReplicas")`` under ``spec`` -> ``spec.decode.minReplicas``; list items as ``[0]``."""
    out = root
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT_RE.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


# ---------------------------------------------------------------------------------------------------------------
# Typed readers: each checks one value and names its path.


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _mapping(value: Any, parts: FieldPath, known: Sequence[str]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        _fail(parts, f"must be a mapping, got {_describe(value)}")
    for key in value:
        if not isinstance(key, str):
            _fail(parts, f"keys must be strings, got {_describe(key)}")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            _fail((*parts, key), f"unknown field{hint}; known fields: {', '.join(sorted(known))}")
    return value


def _int(value: Any, parts: FieldPath, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        else:
            _fail(parts, f"must be an integer, got {_describe(value)}")
    if minimum is not None and value < minimum:
        _fail(parts, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        _fail(parts, f"must be <= {maximum}, got {value}")
    return int(value)


def _number(value: Any, parts: FieldPath, *, positive: bool = False, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(parts, f"must be a number, got {_describe(value)}")
    number = float(value)
    if not math.isfinite(number):
        _fail(parts, f"must be a finite number, got {number!r}")
    if positive and number <= 0:
        _fail(parts, f"must be > 0, got {number!r}")
    if minimum is not None and number < minimum:
        _fail(parts, f"must be >= {minimum!r}, got {number!r}")
    return number


def _string(value: Any, parts: FieldPath) -> str:
    if not isinstance(value, str) or not value.strip():
        _fail(parts, f"must be a non-empty string, got {_describe(value)}")
    return value


def _bool(value: Any, parts: FieldPath) -> bool:
    if not isinstance(value, bool):
        _fail(parts, f"must be true or false, got {_describe(value)}")
    return value


def _enum(enum: type[E], value: Any, parts: FieldPath) -> E:
    allowed = [m.value for m in enum]
    if not isinstance(value, str) or value not in allowed:
        _fail(parts, f"must be one of {', '.join(allowed)}, got {value!r}")
    return enum(value)


def parse_percentile(value: Any, field: str = "percentile") -> float:
    """0.99, 99, 99.9, "p99", "P99.9", "99%" or "0.99" -> a fraction in (0, 1); ConfigError naming ``field``."""
    try:
        return _percentile(value, ())
    except _Invalid as exc:
        raise ConfigError(field, exc.reason) from None


def _percentile(value: Any, parts: FieldPath) -> float:
    if isinstance(value, str):
        match = _PERCENTILE_RE.match(value.strip().lower())
        try:
            if match is None:
                raise ValueError(value)
            if match["p"] is not None or match["pct"] is not None:
                fraction = _percent(match["p"] or match["pct"])
            else:
                fraction = _fraction_or_percent(float(match["num"]), parts)
        except ValueError:
            _fail(parts, f"must be a quantile like 0.99, 99 or 'p99', got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, int | float):
        _fail(parts, f"must be a quantile like 0.99, 99 or 'p99', got {_describe(value)}")
    else:
        fraction = _fraction_or_percent(float(value), parts)
    if not (math.isfinite(fraction) and 0.0 < fraction < 1.0):
        _fail(parts, f"must be strictly between 0 and 1 (or 0 and 100 as a percent), got {value!r}")
    return fraction


def _fraction_or_percent(number: float, parts: FieldPath) -> float:
    if not math.isfinite(number):
        _fail(parts, f"must be a finite quantile, got {number!r}")
    if number == 1.0:
        _fail(parts, "1 is ambiguous (the maximum, or the 1st percentile?): write 0.01 or 'p1' for the latter")
    return _percent(repr(number)) if 1.0 < number < 100.0 else number


def _percent(text: str) -> float:
    """Decimal division, so 99.9 -> 0.999 exactly as written (not 0.9990000000000001)."""
    try:
        return float(Decimal(text) / 100)
    except InvalidOperation:
        raise ValueError(text) from None


# ---------------------------------------------------------------------------------------------------------------
# Sections.

_POOL_KEYS = ("minReplicas", "maxReplicas", "gpusPerReplica", "scaleTargetRef")
_REF_KEYS = ("apiVersion", "kind", "name")
_SLO_KEYS = ("percentile", "targetSeconds")
_RULES_KEYS = ("stabilizationWindowSeconds", "selectPolicy", "policies")
_POLICY_KEYS = ("type", "value", "periodSeconds")
_METRICS_KEYS = ("source", "selector", "windowSeconds", "proxy", "queries", "maxFailureRatio")
_SELECTOR_KEYS = ("matchLabels",)
_SPEC_KEYS = (
    "prefill",
    "decode",
    "slo",
    "gpuBudget",
    "podStartupSeconds",
    "behavior",
    "mode",
    "forecaster",
    "profile",
    "metrics",
)


# Scale to zero is refused (here and in the CRD, with the same words): a GPU pod takes minutes to load its model,
# and while a pool is at zero no pod emits the metrics pdscale scales on, so nothing would ever wake it (KEDA's
# activation needs a signal that exists at zero; pdscale has none yet). A pool scaled to 0 by hand is left alone.
SCALE_TO_ZERO_REFUSED = (
    "must be >= 1: scale to zero is not supported (GPU pods take minutes to start, no activation signal exists "
    "while a pool is at zero, and pdscale would never wake it); to stop a pool, scale its target to 0 by hand: "
    "pdscale then leaves it alone (ScalingDisabled), as the HPA does"
)


def _pool(value: Any, parts: FieldPath) -> PoolSpec:
    raw = _mapping(value, parts, _POOL_KEYS)
    default = PoolSpec()
    min_r = _int(raw.get("minReplicas", default.min_replicas), (*parts, "minReplicas"), minimum=0)
    if min_r == 0:
        _fail((*parts, "minReplicas"), SCALE_TO_ZERO_REFUSED)
    max_r = _int(raw.get("maxReplicas", default.max_replicas), (*parts, "maxReplicas"), minimum=1)
    if min_r > max_r:
        _fail((*parts, "minReplicas"), f"must be <= maxReplicas (got {min_r} > {max_r})")
    gpus = _int(raw.get("gpusPerReplica", default.gpus_per_replica), (*parts, "gpusPerReplica"), minimum=1)
    target = None
    if raw.get("scaleTargetRef") is not None:
        ref_parts = (*parts, "scaleTargetRef")
        ref = _mapping(raw["scaleTargetRef"], ref_parts, _REF_KEYS)
        for key in _REF_KEYS:
            if key not in ref:
                _fail((*ref_parts, key), "is required")
        target = TargetRef(
            api_version=_string(ref["apiVersion"], (*ref_parts, "apiVersion")),
            kind=_string(ref["kind"], (*ref_parts, "kind")),
            name=_string(ref["name"], (*ref_parts, "name")),
        )
    return PoolSpec(min_replicas=min_r, max_replicas=max_r, gpus_per_replica=gpus, target=target)


def _slo(value: Any, parts: FieldPath, default: SLO) -> SLO:
    raw = _mapping(value, parts, _SLO_KEYS)
    percentile = default.percentile
    if "percentile" in raw:
        percentile = _percentile(raw["percentile"], (*parts, "percentile"))
    target_s = _number(raw.get("targetSeconds", default.target_s), (*parts, "targetSeconds"), positive=True)
    return SLO(percentile=percentile, target_s=target_s)


def _rules(value: Any, parts: FieldPath, default: ScalingRules) -> ScalingRules:
    if value is None:
        return default
    raw = _mapping(value, parts, _RULES_KEYS)
    window: float | None = default.stabilization_window_s
    if raw.get("stabilizationWindowSeconds") is not None:
        window = float(
            _int(
                raw["stabilizationWindowSeconds"],
                (*parts, "stabilizationWindowSeconds"),
                minimum=0,
                maximum=MAX_STABILIZATION_WINDOW_S,
            )
        )
    select = default.select_policy
    if raw.get("selectPolicy") is not None:
        select = _enum(SelectPolicy, raw["selectPolicy"], (*parts, "selectPolicy"))
    policies = default.policies
    if raw.get("policies") is not None:
        items = raw["policies"]
        if not isinstance(items, list):
            _fail((*parts, "policies"), f"must be a list, got {_describe(items)}")
        if not items:
            _fail((*parts, "policies"), "must specify at least one policy (omit the field for HPA's defaults)")
        policies = tuple(_policy(item, (*parts, "policies", i)) for i, item in enumerate(items))
    return ScalingRules(stabilization_window_s=window, select_policy=select, policies=policies)


def _policy(value: Any, parts: FieldPath) -> ScalingPolicy:
    raw = _mapping(value, parts, _POLICY_KEYS)
    for key in _POLICY_KEYS:
        if key not in raw:
            _fail((*parts, key), "is required")
    return ScalingPolicy(
        type=_enum(PolicyType, raw["type"], (*parts, "type")),
        value=_int(raw["value"], (*parts, "value"), minimum=1),
        period_s=float(_int(raw["periodSeconds"], (*parts, "periodSeconds"), minimum=1, maximum=MAX_POLICY_PERIOD_S)),
    )


def _behavior(value: Any, parts: FieldPath) -> Behavior:
    raw = _mapping(value, parts, ("scaleUp", "scaleDown"))
    return Behavior(
        scale_up=_rules(raw.get("scaleUp"), (*parts, "scaleUp"), default_scale_up()),
        scale_down=_rules(raw.get("scaleDown"), (*parts, "scaleDown"), pdscale_default_behavior().scale_down),
    )


def _label_pair(key: Any, val: Any, parts: FieldPath) -> tuple[str, str]:
    if not isinstance(key, str) or not key:
        _fail(parts, f"label keys must be non-empty strings, got {_describe(key)}")
    match = _K8S_LABEL_KEY_RE.match(key)
    key_parts = (*parts, key)
    if match is None or len(match["prefix"] or "") > 253:
        _fail(key_parts, "is not a valid Kubernetes label key ([prefix/]name: name <= 63 chars of [-A-Za-z0-9_.], "
              "alphanumeric at both ends; prefix a DNS subdomain)")
    if not _PROM_LABEL_NAME_RE.match(key):
        _fail(key_parts, "selector keys match Prometheus series labels, so they must also be Prometheus label "
              "names ([A-Za-z_][A-Za-z0-9_]*; no '/', '.' or '-'): relabel the pod label onto the series")
    if not isinstance(val, str):
        _fail(key_parts, f"label values must be strings, got {_describe(val)}")
    if not _K8S_LABEL_VALUE_RE.match(val):
        _fail(key_parts, f"{val!r} is not a valid Kubernetes label value (<= 63 chars of [-A-Za-z0-9_.], "
              "alphanumeric at both ends, or empty)")
    return key, val


def _metrics(value: Any, parts: FieldPath) -> MetricsSpec:
    raw = _mapping(value, parts, _METRICS_KEYS)
    default = MetricsSpec()
    source = raw.get("source", default.source)
    if not isinstance(source, str) or source not in METRIC_SOURCES:
        _fail((*parts, "source"), f"must be one of {', '.join(METRIC_SOURCES)}, got {source!r}")
    selector = default.selector
    if raw.get("selector") is not None:
        sel = _mapping(raw["selector"], (*parts, "selector"), _SELECTOR_KEYS)
        labels_parts = (*parts, "selector", "matchLabels")
        labels = sel.get("matchLabels") or {}
        if not isinstance(labels, Mapping):
            _fail(labels_parts, f"must be a mapping of label -> value, got {_describe(labels)}")
        selector = tuple(sorted(_label_pair(k, v, labels_parts) for k, v in labels.items()))
    window_s = _number(raw.get("windowSeconds", default.window_s), (*parts, "windowSeconds"), positive=True)
    if round(window_s * 1000) <= 0:
        _fail((*parts, "windowSeconds"), f"must be at least 1 ms, got {window_s!r}")
    proxy = _bool(raw.get("proxy", default.proxy), (*parts, "proxy"))
    queries = default.custom_queries
    if raw.get("queries") is not None:
        queries = _queries(raw["queries"], (*parts, "queries"))
    if source == "custom" and not queries:
        _fail((*parts, "queries"), "source custom needs at least one query (signal -> PromQL template)")
    if source != "custom" and queries:
        _fail((*parts, "queries"), f"only used with source custom (source is {source!r})")
    ratio = _number(raw.get("maxFailureRatio", default.max_failure_ratio), (*parts, "maxFailureRatio"),
                    positive=True)
    if ratio > 1:
        _fail((*parts, "maxFailureRatio"), f"is a share of requests: must be <= 1, got {ratio!r}")
    return MetricsSpec(source=source, selector=selector, window_s=window_s, proxy=proxy, custom_queries=queries,
                       max_failure_ratio=ratio)


def _queries(value: Any, parts: FieldPath) -> tuple[tuple[str, str], ...]:
    from autoscaler.prometheus import CUSTOM_SIGNALS  # lazy: config must not pull the HTTP client in eagerly

    if not isinstance(value, Mapping):
        _fail(parts, f"must be a mapping of signal -> PromQL template, got {_describe(value)}")
    out = []
    for signal, template in value.items():
        if not isinstance(signal, str) or signal not in CUSTOM_SIGNALS:
            _fail((*parts, str(signal)), f"unknown signal; known: {', '.join(CUSTOM_SIGNALS)}")
        out.append((signal, _string(template, (*parts, signal))))
    return tuple(sorted(out))


def _spec(value: Any) -> AutoscalerSpec:
    raw = _mapping(value, (), _SPEC_KEYS)
    default = AutoscalerSpec()
    prefill = _pool(raw.get("prefill"), ("prefill",))
    decode = _pool(raw.get("decode"), ("decode",))
    if prefill.target is not None and prefill.target == decode.target:
        _fail(("decode", "scaleTargetRef"), "must differ from prefill.scaleTargetRef: two pools cannot share "
              "one target (each decision would undo the other's)")
    slo = _mapping(raw.get("slo"), ("slo",), ("ttft", "itl"))
    ttft = _slo(slo.get("ttft"), ("slo", "ttft"), default.ttft)
    itl = _slo(slo.get("itl"), ("slo", "itl"), default.itl)
    budget = None
    if raw.get("gpuBudget") is not None:
        budget = _int(raw["gpuBudget"], ("gpuBudget",), minimum=1)
        floor = prefill.min_replicas * prefill.gpus_per_replica + decode.min_replicas * decode.gpus_per_replica
        if budget < floor:
            _fail(
                ("gpuBudget",),
                f"must cover the minimum replicas' GPUs (prefill {prefill.min_replicas}x{prefill.gpus_per_replica} "
                f"+ decode {decode.min_replicas}x{decode.gpus_per_replica} = {floor}), got {budget}",
            )
    startup = _number(raw.get("podStartupSeconds", default.pod_startup_s), ("podStartupSeconds",), minimum=0.0)
    profile = _string(raw.get("profile", default.profile), ("profile",))
    return AutoscalerSpec(
        prefill=prefill,
        decode=decode,
        ttft=ttft,
        itl=itl,
        gpu_budget=budget,
        pod_startup_s=startup,
        behavior=_behavior(raw.get("behavior"), ("behavior",)),
        mode=_enum(Mode, raw.get("mode", default.mode.value), ("mode",)),
        forecaster=_enum(Forecaster, raw.get("forecaster", default.forecaster.value), ("forecaster",)),
        profile=profile,
        metrics=_metrics(raw.get("metrics"), ("metrics",)),
    )


# ---------------------------------------------------------------------------------------------------------------
# Public API.


def spec_from_dict(
    data: Mapping[str, Any] | None,
    *,
    source: str | None = None,
    path: str = "spec",
    line_of: Callable[[tuple[PathPart, ...]], int | None] | None = None,
) -> AutoscalerSpec:
    """Parse a CR ``spec`` (or a scenario's ``autoscaler:`` section) into an AutoscalerSpec.

    ``source`` names where it came from (file, ``DisaggregatedAutoscaler ns/name``) and prefixes errors;
    ``path`` is the root of field paths in errors (``spec``; a scenario may pass ``autoscaler``).
    ``line_of`` maps a field path to its line in the source file, when known.
    """
    try:
        return _spec(data)
    except _Invalid as exc:
        raise ConfigError(
            format_path(path, exc.parts), exc.reason, source=source, line=line_of(exc.parts) if line_of else None
        ) from None


def spec_to_dict(spec: AutoscalerSpec) -> dict[str, Any]:
    """The CRD-shaped mapping of ``spec`` (every field explicit, JSON/YAML-safe); ``spec_from_dict`` inverts it.

    A ``None`` stabilization window (only constructible in code) is omitted and reads back as HPA's default.
    """

    def pool(p: PoolSpec) -> dict[str, Any]:
        out: dict[str, Any] = {
            "minReplicas": p.min_replicas,
            "maxReplicas": p.max_replicas,
            "gpusPerReplica": p.gpus_per_replica,
        }
        if p.target is not None:
            out["scaleTargetRef"] = {"apiVersion": p.target.api_version, "kind": p.target.kind, "name": p.target.name}
        return out

    def rules(r: ScalingRules) -> dict[str, Any]:
        out: dict[str, Any] = {"selectPolicy": r.select_policy.value}
        if r.stabilization_window_s is not None:
            out["stabilizationWindowSeconds"] = _whole(r.stabilization_window_s)
        out["policies"] = [
            {"type": p.type.value, "value": p.value, "periodSeconds": _whole(p.period_s)} for p in r.policies
        ]
        return out

    metrics: dict[str, Any] = {
        "source": spec.metrics.source,
        "selector": {"matchLabels": dict(spec.metrics.selector)},
        "windowSeconds": spec.metrics.window_s,
        "proxy": spec.metrics.proxy,
        "maxFailureRatio": spec.metrics.max_failure_ratio,
    }
    if spec.metrics.custom_queries:
        metrics["queries"] = dict(spec.metrics.custom_queries)
    out: dict[str, Any] = {
        "prefill": pool(spec.prefill),
        "decode": pool(spec.decode),
        "slo": {
            "ttft": {"percentile": spec.ttft.percentile, "targetSeconds": spec.ttft.target_s},
            "itl": {"percentile": spec.itl.percentile, "targetSeconds": spec.itl.target_s},
        },
        "podStartupSeconds": spec.pod_startup_s,
        "behavior": {"scaleUp": rules(spec.behavior.scale_up), "scaleDown": rules(spec.behavior.scale_down)},
        "mode": spec.mode.value,
        "forecaster": spec.forecaster.value,
        "profile": spec.profile,
        "metrics": metrics,
    }
    if spec.gpu_budget is not None:
        out["gpuBudget"] = spec.gpu_budget
    return out


def _whole(seconds: float) -> int | float:
    """HPA durations are integers; keep a fractional value (only reachable from code) as is."""
    return int(seconds) if float(seconds).is_integer() else seconds


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, str) and key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r} (first on line {seen[key]})",
                key_node.start_mark,
            )
        if isinstance(key, str):
            seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _line_index(node: yaml.Node | None) -> dict[tuple[PathPart, ...], int]:
    """Field path -> 1-based line of its key (mappings) or item (lists), from the composed YAML tree."""
    lines: dict[tuple[PathPart, ...], int] = {}

    def walk(n: yaml.Node, parts: tuple[PathPart, ...]) -> None:
        if isinstance(n, yaml.MappingNode):
            for key_node, value_node in n.value:
                if isinstance(key_node, yaml.ScalarNode):
                    child = (*parts, str(key_node.value))
                    lines[child] = key_node.start_mark.line + 1
                    walk(value_node, child)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                lines[(*parts, i)] = item.start_mark.line + 1
                walk(item, (*parts, i))

    if node is not None:
        walk(node, ())
    return lines


def load_spec_file(path: str | Path) -> AutoscalerSpec:
    """Read a YAML file holding a DisaggregatedAutoscaler object (its ``spec`` is used) or a bare spec.

    Errors name the file, the line and the field: ``autoscaler.yaml:12: spec.decode.minReplicas: ...``.
    """
    documents = _read_documents(Path(path), single=True)
    if not documents:
        return AutoscalerSpec()
    node, data = documents[0]
    return _spec_of_document(node, data, str(path))


def load_spec_documents(path: str | Path, text: str | None = None) -> list[tuple[str, AutoscalerSpec]]:
    """Every DisaggregatedAutoscaler in a (multi-document) YAML file, as (name, spec): ``namespace/name`` from
    the object's metadata (``path#N`` for a bare spec or an unnamed object). Documents of other kinds (the
    Deployments of an example, ``kubectl kustomize`` output) are skipped; a stream without any autoscaler is an
    error. ``text`` replaces reading ``path`` (``-`` is standard input for the caller)."""
    documents = _read_documents(Path(path), single=False, text=text)
    out: list[tuple[str, AutoscalerSpec]] = []
    for i, (node, data) in enumerate(documents):
        if isinstance(data, Mapping) and ("kind" in data or "apiVersion" in data) and data.get("kind") != KIND:
            continue
        spec = _spec_of_document(node, data, str(path))  # lines count from the top of the file
        meta = data.get("metadata") if isinstance(data, Mapping) else None
        name = meta.get("name") if isinstance(meta, Mapping) else None
        namespace = meta.get("namespace") if isinstance(meta, Mapping) else None
        key = f"{namespace or 'default'}/{name}" if name else (f"{path}#{i}" if len(documents) > 1 else str(path))
        if any(k == key for k, _ in out):
            raise ConfigError("metadata.name", f"{key} appears twice", source=str(path), line=_line_index(node).get(
                ("metadata", "name")))
        out.append((key, spec))
    if not out:
        raise ConfigError("", f"no {KIND} in {len(documents)} YAML document(s)", source=str(path))
    return out


def _read_documents(path: Path, *, single: bool, text: str | None = None) -> list[tuple[yaml.Node, Any]]:
    """(node, data) per non-empty YAML document; ``single`` rejects a stream of several."""
    if text is None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError("", f"cannot read: {exc.strerror or exc}", source=str(path)) from None
    out: list[tuple[yaml.Node, Any]] = []
    try:
        loader = _UniqueKeyLoader(text)
        try:
            if single:
                node = loader.get_single_node()
                if node is not None:
                    out.append((node, loader.construct_document(node)))
            else:
                while loader.check_node():
                    node = loader.get_node()
                    if node is not None:
                        out.append((node, loader.construct_document(node)))
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError("", f"invalid YAML: {exc.problem or exc}", source=str(path), line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"invalid YAML: {exc}", source=str(path)) from None
    return [(n, d) for n, d in out if d is not None]


def _spec_of_document(node: yaml.Node, data: Any, source: str) -> AutoscalerSpec:
    lines = _line_index(node)
    if not isinstance(data, Mapping):
        raise ConfigError("", f"must hold a mapping, got {type(data).__name__}", source=source, line=1)
    if "kind" in data or "apiVersion" in data:
        kind = data.get("kind")
        if kind != KIND:
            raise ConfigError("kind", f"must be {KIND}, got {kind!r}", source=source, line=lines.get(("kind",)))
        spec_lines = {k[1:]: v for k, v in lines.items() if k[:1] == ("spec",)}
        return spec_from_dict(
            data.get("spec") or {}, source=source, path="spec", line_of=lambda parts: _nearest(spec_lines, parts)
        )
    return spec_from_dict(data, source=source, path="", line_of=lambda parts: _nearest(lines, parts))


def _nearest(lines: Mapping[tuple[PathPart, ...], int], parts: tuple[PathPart, ...]) -> int | None:
    """Line of the deepest existing prefix of ``parts`` (a missing field points at its parent)."""
    for n in range(len(parts), 0, -1):
        if parts[:n] in lines:
            return lines[parts[:n]]
    return None


def with_overrides(spec: AutoscalerSpec, overrides: Mapping[str, Any], *, source: str | None = None) -> AutoscalerSpec:
    """``spec`` with a partial CRD-shaped mapping merged over it (deep merge of mappings, lists replaced)."""
    merged = _deep_merge(spec_to_dict(spec), overrides)
    return spec_from_dict(merged, source=source)


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


__all__ = [
    "KIND",
    "METRIC_SOURCES",
    "ConfigError",
    "format_path",
    "load_spec_documents",
    "load_spec_file",
    "parse_percentile",
    "spec_from_dict",
    "spec_to_dict",
    "with_overrides",
]
