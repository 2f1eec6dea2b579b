"""autoscaler.config: CRD-shaped mappings <-> AutoscalerSpec; every error names its field path."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.config import (
    ConfigError,
    load_spec_file,
    parse_percentile,
    spec_from_dict,
    spec_to_dict,
    with_overrides,
)
from autoscaler.core.spec import (
    PDSCALE_SCALE_DOWN_WINDOW_S,
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
    pdscale_default_scale_down,
)

DEFAULT = AutoscalerSpec()


def _get(spec: AutoscalerSpec, attr: str) -> Any:
    value: Any = spec
    for name in attr.split("."):
        value = getattr(value, name)
    return value


# id, input spec mapping, {dotted attribute of AutoscalerSpec: expected value}
GOOD: list[tuple[str, dict[str, Any] | None, dict[str, Any]]] = [
    ("empty-is-defaults", {}, {"prefill": PoolSpec(), "decode": PoolSpec(), "ttft": DEFAULT.ttft, "mode": Mode.ACTIVE}),
    ("none-is-defaults", None, {"behavior": pdscale_default_behavior(), "metrics": MetricsSpec(), "gpu_budget": None}),
    (
        "pools-and-targets",
        {
            "prefill": {"minReplicas": 2, "maxReplicas": 8, "gpusPerReplica": 1},
            "decode": {
                "minReplicas": 1,
                "maxReplicas": 4,
                "gpusPerReplica": 4,
                "scaleTargetRef": {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "name": "d"},
            },
        },
        {
            "prefill": PoolSpec(2, 8, 1, None),
            "decode": PoolSpec(1, 4, 4, TargetRef("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "d")),
        },
    ),
    ("percentile-fraction", {"slo": {"ttft": {"percentile": 0.95, "targetSeconds": 0.5}}}, {"ttft": SLO(0.95, 0.5)}),
    ("percentile-p-string", {"slo": {"ttft": {"percentile": "p99"}}}, {"ttft": SLO(0.99, 1.0)}),
    ("percentile-p-decimal", {"slo": {"itl": {"percentile": "P99.9"}}}, {"itl": SLO(0.999, 0.05)}),
    ("percentile-percent-int", {"slo": {"itl": {"percentile": 90, "targetSeconds": 0.1}}}, {"itl": SLO(0.9, 0.1)}),
    ("percentile-percent-sign", {"slo": {"itl": {"percentile": "95%"}}}, {"itl.percentile": 0.95}),
    ("target-int-seconds", {"slo": {"ttft": {"targetSeconds": 2}}}, {"ttft.target_s": 2.0}),
    ("budget-exactly-min-gpus", {"gpuBudget": 5, "prefill": {"minReplicas": 1}, "decode": {"minReplicas": 1, "gpusPerReplica": 4}}, {"gpu_budget": 5}),
    ("integral-float-replicas", {"prefill": {"maxReplicas": 6.0}}, {"prefill.max_replicas": 6}),
    ("startup-zero", {"podStartupSeconds": 0}, {"pod_startup_s": 0.0}),
    ("mode-advisory", {"mode": "advisory"}, {"mode": Mode.ADVISORY}),
    ("forecaster-seasonal", {"forecaster": "seasonal"}, {"forecaster": Forecaster.SEASONAL}),
    ("profile-path", {"profile": "/etc/pdscale/profile.yaml"}, {"profile": "/etc/pdscale/profile.yaml"}),
    (
        "behavior-partial-takes-pdscale-defaults",
        {"behavior": {"scaleDown": {"selectPolicy": "Min"}}},
        {
            "behavior.scale_up": default_scale_up(),
            "behavior.scale_down": ScalingRules(
                PDSCALE_SCALE_DOWN_WINDOW_S, SelectPolicy.MIN, pdscale_default_scale_down().policies
            ),
        },
    ),
    (
        "behavior-full",
        {
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 30,
                    "selectPolicy": "Disabled",
                    "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
                },
                "scaleDown": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Percent", "value": 10, "periodSeconds": 1800}]},
            }
        },
        {
            "behavior.scale_up": ScalingRules(30.0, SelectPolicy.DISABLED, (ScalingPolicy(PolicyType.PODS, 2, 60.0),)),
            "behavior.scale_down": ScalingRules(0.0, SelectPolicy.MAX, (ScalingPolicy(PolicyType.PERCENT, 10, 1800.0),)),
        },
    ),
    (
        "metrics-selector-sorted",
        {"metrics": {"source": "dynamo", "selector": {"matchLabels": {"namespace": "prod", "model_name": "llama-3.1-8b"}}, "windowSeconds": 30, "proxy": False}},
        {"metrics": MetricsSpec("dynamo", (("model_name", "llama-3.1-8b"), ("namespace", "prod")), 30.0, False, ())},
    ),
    ("metrics-empty-label-value", {"metrics": {"selector": {"matchLabels": {"tier": ""}}}}, {"metrics.selector": (("tier", ""),)}),
    (
        "metrics-custom-queries",
        {"metrics": {"source": "custom", "queries": {"ttft_s": "histogram_quantile({ttft_percentile}, x{{selector}})"}}},
        {"metrics.custom_queries": (("ttft_s", "histogram_quantile({ttft_percentile}, x{{selector}})"),)},
    ),
    ("llm-d-source", {"metrics": {"source": "llm-d"}}, {"metrics.source": "llm-d"}),
]


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in GOOD], ids=[c[0] for c in GOOD])
def test_good_inputs(data: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    spec = spec_from_dict(data)
    for attr, value in expected.items():
        assert _get(spec, attr) == value, attr


# id, input, exact field path in the error, a fragment of the reason
BAD: list[tuple[str, Any, str, str]] = [
    ("not-a-mapping", ["prefill"], "spec", "must be a mapping"),
    ("unknown-top-key", {"gpuBudgets": 4}, "spec.gpuBudgets", "did you mean gpuBudget?"),
    ("unknown-pool-key", {"prefill": {"maxReplica": 3}}, "spec.prefill.maxReplica", "did you mean maxReplicas?"),
    ("min-above-max", {"decode": {"minReplicas": 5, "maxReplicas": 3}}, "spec.decode.minReplicas", "must be <= maxReplicas (got 5 > 3)"),
    ("min-above-default-max", {"prefill": {"minReplicas": 65}}, "spec.prefill.minReplicas", "(got 65 > 64)"),
    ("negative-min", {"prefill": {"minReplicas": -1}}, "spec.prefill.minReplicas", "must be >= 0"),
    ("zero-max", {"prefill": {"minReplicas": 1, "maxReplicas": 0}}, "spec.prefill.maxReplicas", "must be >= 1"),
    ("scale-to-zero-refused", {"decode": {"minReplicas": 0}}, "spec.decode.minReplicas", "scale to zero is not supported (GPU pods take minutes to start, no activation signal exists while a pool is at zero"),
    ("one-target-for-both-pools", {"prefill": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"}}, "decode": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"}}}, "spec.decode.scaleTargetRef", "must differ from prefill.scaleTargetRef"),
    ("failure-ratio-zero", {"metrics": {"maxFailureRatio": 0}}, "spec.metrics.maxFailureRatio", "must be > 0"),
    ("failure-ratio-above-one", {"metrics": {"maxFailureRatio": 5}}, "spec.metrics.maxFailureRatio", "must be <= 1"),
    ("replicas-string", {"decode": {"maxReplicas": "4"}}, "spec.decode.maxReplicas", "must be an integer, got str '4'"),
    ("replicas-bool", {"decode": {"maxReplicas": True}}, "spec.decode.maxReplicas", "must be an integer"),
    ("replicas-fraction", {"decode": {"maxReplicas": 2.5}}, "spec.decode.maxReplicas", "must be an integer"),
    ("gpus-zero", {"decode": {"gpusPerReplica": 0}}, "spec.decode.gpusPerReplica", "must be >= 1"),
    ("pool-not-mapping", {"decode": 3}, "spec.decode", "must be a mapping, got int 3"),
    ("target-ref-missing-name", {"prefill": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment"}}}, "spec.prefill.scaleTargetRef.name", "is required"),
    ("target-ref-empty-kind", {"prefill": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "", "name": "p"}}}, "spec.prefill.scaleTargetRef.kind", "non-empty string"),
    ("target-ref-unknown", {"prefill": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "D", "name": "p", "namespace": "x"}}}, "spec.prefill.scaleTargetRef.namespace", "unknown field"),
    ("slo-unknown-signal", {"slo": {"tpot": {}}}, "spec.slo.tpot", "unknown field"),
    ("percentile-one", {"slo": {"ttft": {"percentile": 1}}}, "spec.slo.ttft.percentile", "ambiguous"),
    ("percentile-hundred", {"slo": {"ttft": {"percentile": 100}}}, "spec.slo.ttft.percentile", "strictly between 0 and 1"),
    ("percentile-zero", {"slo": {"ttft": {"percentile": 0}}}, "spec.slo.ttft.percentile", "strictly between 0 and 1"),
    ("percentile-negative", {"slo": {"itl": {"percentile": -0.5}}}, "spec.slo.itl.percentile", "strictly between 0 and 1"),
    ("percentile-p100", {"slo": {"itl": {"percentile": "p100"}}}, "spec.slo.itl.percentile", "strictly between 0 and 1"),
    ("percentile-garbage", {"slo": {"itl": {"percentile": "high"}}}, "spec.slo.itl.percentile", "like 0.99, 99 or 'p99'"),
    ("percentile-nan", {"slo": {"itl": {"percentile": math.nan}}}, "spec.slo.itl.percentile", "finite"),
    ("target-negative", {"slo": {"ttft": {"targetSeconds": -1}}}, "spec.slo.ttft.targetSeconds", "must be > 0"),
    ("target-zero", {"slo": {"ttft": {"targetSeconds": 0}}}, "spec.slo.ttft.targetSeconds", "must be > 0"),
    ("target-nan", {"slo": {"ttft": {"targetSeconds": math.nan}}}, "spec.slo.ttft.targetSeconds", "finite"),
    ("target-inf", {"slo": {"itl": {"targetSeconds": math.inf}}}, "spec.slo.itl.targetSeconds", "finite"),
    ("target-string", {"slo": {"itl": {"targetSeconds": "50ms"}}}, "spec.slo.itl.targetSeconds", "must be a number, got str"),
    ("budget-below-min-gpus", {"gpuBudget": 7, "prefill": {"minReplicas": 2}, "decode": {"minReplicas": 3, "gpusPerReplica": 2}}, "spec.gpuBudget", "(prefill 2x1 + decode 3x2 = 8), got 7"),
    ("budget-zero", {"gpuBudget": 0}, "spec.gpuBudget", "must be >= 1"),
    ("startup-negative", {"podStartupSeconds": -5}, "spec.podStartupSeconds", "must be >= 0.0"),
    ("startup-inf", {"podStartupSeconds": math.inf}, "spec.podStartupSeconds", "finite"),
    ("mode-unknown", {"mode": "dry-run"}, "spec.mode", "must be one of active, advisory"),
    ("mode-case", {"mode": "Active"}, "spec.mode", "must be one of active, advisory"),
    ("forecaster-unknown", {"forecaster": "prophet"}, "spec.forecaster", "last, holt, seasonal"),
    ("profile-empty", {"profile": " "}, "spec.profile", "non-empty string"),
    ("behavior-unknown-direction", {"behavior": {"scaleSideways": {}}}, "spec.behavior.scaleSideways", "unknown field"),
    ("behavior-window-too-long", {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 3601}}}, "spec.behavior.scaleDown.stabilizationWindowSeconds", "must be <= 3600"),
    ("behavior-window-negative", {"behavior": {"scaleUp": {"stabilizationWindowSeconds": -1}}}, "spec.behavior.scaleUp.stabilizationWindowSeconds", "must be >= 0"),
    ("behavior-select-unknown", {"behavior": {"scaleUp": {"selectPolicy": "Average"}}}, "spec.behavior.scaleUp.selectPolicy", "Max, Min, Disabled"),
    ("behavior-empty-policies", {"behavior": {"scaleUp": {"policies": []}}}, "spec.behavior.scaleUp.policies", "at least one policy"),
    ("behavior-policies-not-list", {"behavior": {"scaleUp": {"policies": {"type": "Pods"}}}}, "spec.behavior.scaleUp.policies", "must be a list"),
    ("policy-type-unknown", {"behavior": {"scaleDown": {"policies": [{"type": "pods", "value": 1, "periodSeconds": 15}]}}}, "spec.behavior.scaleDown.policies[0].type", "Pods, Percent"),
    ("policy-value-zero", {"behavior": {"scaleDown": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}, {"type": "Pods", "value": 0, "periodSeconds": 15}]}}}, "spec.behavior.scaleDown.policies[1].value", "must be >= 1"),
    ("policy-period-too-long", {"behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 1801}]}}}, "spec.behavior.scaleUp.policies[0].periodSeconds", "must be <= 1800"),
    ("policy-missing-period", {"behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 1}]}}}, "spec.behavior.scaleUp.policies[0].periodSeconds", "is required"),
    ("metrics-source-unknown", {"metrics": {"source": "datadog"}}, "spec.metrics.source", "vllm, dynamo, llm-d, custom"),
    ("metrics-window-zero", {"metrics": {"windowSeconds": 0}}, "spec.metrics.windowSeconds", "must be > 0"),
    ("metrics-window-nan", {"metrics": {"windowSeconds": math.nan}}, "spec.metrics.windowSeconds", "finite"),
    ("metrics-proxy-string", {"metrics": {"proxy": "yes"}}, "spec.metrics.proxy", "true or false"),
    ("selector-match-expressions", {"metrics": {"selector": {"matchExpressions": []}}}, "spec.metrics.selector.matchExpressions", "unknown field"),
    ("selector-key-space", {"metrics": {"selector": {"matchLabels": {"model name": "m"}}}}, "spec.metrics.selector.matchLabels['model name']", "not a valid Kubernetes label key"),
    ("selector-key-too-long", {"metrics": {"selector": {"matchLabels": {"a" * 64: "m"}}}}, f"spec.metrics.selector.matchLabels.{'a' * 64}", "not a valid Kubernetes label key"),
    ("selector-key-prefixed", {"metrics": {"selector": {"matchLabels": {"app.kubernetes.io/name": "m"}}}}, "spec.metrics.selector.matchLabels['app.kubernetes.io/name']", "Prometheus label names"),
    ("selector-key-underscore-start", {"metrics": {"selector": {"matchLabels": {"__name__": "up"}}}}, "spec.metrics.selector.matchLabels.__name__", "not a valid Kubernetes label key"),
    ("selector-key-dash", {"metrics": {"selector": {"matchLabels": {"model-name": "m"}}}}, "spec.metrics.selector.matchLabels['model-name']", "Prometheus label names"),
    ("selector-value-slash", {"metrics": {"selector": {"matchLabels": {"model_name": "meta-llama/Llama-3.1-8B"}}}}, "spec.metrics.selector.matchLabels.model_name", "not a valid Kubernetes label value"),
    ("selector-value-too-long", {"metrics": {"selector": {"matchLabels": {"app": "x" * 64}}}}, "spec.metrics.selector.matchLabels.app", "not a valid Kubernetes label value"),
    ("selector-value-int", {"metrics": {"selector": {"matchLabels": {"replica": 3}}}}, "spec.metrics.selector.matchLabels.replica", "must be strings"),
    ("custom-without-queries", {"metrics": {"source": "custom"}}, "spec.metrics.queries", "at least one query"),
    ("queries-without-custom", {"metrics": {"queries": {"ttft_s": "x"}}}, "spec.metrics.queries", "only used with source custom"),
    ("queries-unknown-signal", {"metrics": {"source": "custom", "queries": {"p99": "x"}}}, "spec.metrics.queries.p99", "unknown signal"),
    ("queries-empty-template", {"metrics": {"source": "custom", "queries": {"itl_s": ""}}}, "spec.metrics.queries.itl_s", "non-empty string"),
]


@pytest.mark.parametrize(("data", "field", "reason"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_inputs_name_the_field(data: Any, field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        spec_from_dict(data, source="DisaggregatedAutoscaler prod/llama")
    err = info.value
    assert err.field == field
    assert reason in err.reason
    assert str(err).startswith(f"DisaggregatedAutoscaler prod/llama: {field}: ")
    assert isinstance(err, ValueError)


def test_error_message_matches_the_documented_example() -> None:
    with pytest.raises(ConfigError, match=r"^spec\.decode\.minReplicas: must be <= maxReplicas \(got 5 > 3\)$"):
        spec_from_dict({"decode": {"minReplicas": 5, "maxReplicas": 3}})


def test_scenario_root_path() -> None:
    with pytest.raises(ConfigError) as info:
        spec_from_dict({"mode": "x"}, source="scenarios/a.yaml", path="autoscaler")
    assert str(info.value).startswith("scenarios/a.yaml: autoscaler.mode: ")


PERCENTILES = [
    ("fraction", 0.99, 0.99),
    ("percent-int", 99, 0.99),
    ("percent-float", 99.9, 0.999),
    ("p-string", "p99", 0.99),
    ("p-upper", "P50", 0.5),
    ("p-decimal", "p99.99", 0.9999),
    ("percent-sign", "95%", 0.95),
    ("numeric-string-fraction", "0.9", 0.9),
    ("numeric-string-percent", "90", 0.9),
    ("whitespace", " p95 ", 0.95),
]


@pytest.mark.parametrize(("value", "expected"), [c[1:] for c in PERCENTILES], ids=[c[0] for c in PERCENTILES])
def test_parse_percentile(value: Any, expected: float) -> None:
    assert parse_percentile(value) == expected


def test_parse_percentile_error_is_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^slo\.ttft\.percentile: "):
        parse_percentile("p0", field="slo.ttft.percentile")


# ---- files -----------------------------------------------------------------------------------------------

CR = """\
apiVersion: pdscale.io/v1alpha1
kind: DisaggregatedAutoscaler
metadata:
  name: llama
spec:
  prefill:
    minReplicas: 1
    maxReplicas: 8
  decode:
    minReplicas: 5
    maxReplicas: 3
"""


def test_load_cr_file_error_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "llama.yaml"
    path.write_text(CR)
    with pytest.raises(ConfigError) as info:
        load_spec_file(path)
    assert str(info.value) == f"{path}:10: spec.decode.minReplicas: must be <= maxReplicas (got 5 > 3)"
    assert info.value.line == 10 and info.value.source == str(path)


def test_load_cr_file(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(CR.replace("minReplicas: 5", "minReplicas: 2"))
    spec = load_spec_file(path)
    assert spec.decode == PoolSpec(2, 3, 1, None) and spec.prefill.max_replicas == 8


FILE_ERRORS = [
    ("bare-spec-unknown-key", "decode:\n  minReplicas: 1\n  maxReplicass: 2\n", "3: decode.maxReplicass: unknown field"),
    ("missing-field-points-at-parent", "behavior:\n  scaleUp:\n    policies:\n      - type: Pods\n        value: 1\n", "4: behavior.scaleUp.policies[0].periodSeconds: is required"),
    ("invalid-yaml", "decode:\n  minReplicas: [1\n", "3: invalid YAML"),
    ("duplicate-key", "mode: active\nmode: advisory\n", "2: invalid YAML: found duplicate key 'mode' (first on line 1)"),
    ("not-a-mapping", "- a\n- b\n", "1: must hold a mapping, got list"),
    ("wrong-kind", "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nspec: {}\n", "2: kind: must be DisaggregatedAutoscaler"),
    ("two-documents", "mode: active\n---\nmode: advisory\n", "invalid YAML"),
    ("nan-target", "slo:\n  itl:\n    targetSeconds: .nan\n", "3: slo.itl.targetSeconds: must be a finite number"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in FILE_ERRORS], ids=[c[0] for c in FILE_ERRORS])
def test_load_spec_file_errors(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_spec_file(path)
    assert str(info.value).startswith(f"{path}:"), str(info.value)
    assert expected in str(info.value)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read"):
        load_spec_file(tmp_path / "nope.yaml")


def test_empty_file_is_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert load_spec_file(path) == AutoscalerSpec()


def test_with_overrides_deep_merges() -> None:
    base = spec_from_dict({"decode": {"minReplicas": 2, "maxReplicas": 10}, "slo": {"itl": {"percentile": 0.9}}})
    spec = with_overrides(base, {"decode": {"maxReplicas": 4}, "slo": {"itl": {"targetSeconds": 0.02}}})
    assert spec.decode == PoolSpec(2, 4, 1, None)
    assert spec.itl == SLO(0.9, 0.02)
    with pytest.raises(ConfigError, match=r"spec\.decode\.minReplicas"):
        with_overrides(base, {"decode": {"maxReplicas": 1}})


# ---- round trip ------------------------------------------------------------------------------------------

_names = st.from_regex(r"\A[a-z][a-z0-9-]{0,20}[a-z0-9]\Z")
_label_keys = st.from_regex(r"\A[a-zA-Z]([a-zA-Z0-9_]{0,20}[a-zA-Z0-9])?\Z")
_label_values = st.from_regex(r"\A([A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?)?\Z")
_seconds = st.floats(min_value=1e-3, max_value=1e4, allow_nan=False, allow_infinity=False)


@st.composite
def pools(draw: st.DrawFn) -> PoolSpec:
    lo = draw(st.integers(1, 50))  # 0 is refused (no scale to zero)
    hi = draw(st.integers(lo, 200))
    target = draw(st.none() | st.builds(TargetRef, st.sampled_from(["apps/v1", "leaderworkerset.x-k8s.io/v1"]), st.sampled_from(["Deployment", "StatefulSet", "LeaderWorkerSet"]), _names))
    return PoolSpec(lo, hi, draw(st.integers(1, 8)), target)


_policies = st.builds(ScalingPolicy, st.sampled_from(list(PolicyType)), st.integers(1, 1000), st.integers(1, 1800).map(float))
_rules = st.builds(
    ScalingRules,
    st.integers(0, 3600).map(float),
    st.sampled_from(list(SelectPolicy)),
    st.lists(_policies, min_size=1, max_size=3).map(tuple),
)
_slos = st.builds(SLO, st.floats(min_value=1e-4, max_value=0.9999), _seconds)


@st.composite
def metrics(draw: st.DrawFn) -> MetricsSpec:
    source = draw(st.sampled_from(["vllm", "dynamo", "llm-d", "custom"]))
    labels = draw(st.dictionaries(_label_keys, _label_values, max_size=3))
    queries: tuple[tuple[str, str], ...] = ()
    if source == "custom":
        signals = draw(st.lists(st.sampled_from(["ttft_s", "itl_s", "request_rate_per_s", "decode_waiting_requests"]), min_size=1, max_size=3, unique=True))
        queries = tuple(sorted((s, f"sum(rate(m_{i}{{{{selector}}}}[{{window}}]))") for i, s in enumerate(signals)))
    return MetricsSpec(source, tuple(sorted(labels.items())), draw(_seconds), draw(st.booleans()), queries,
                       draw(st.floats(min_value=1e-4, max_value=1.0)))


@st.composite
def specs(draw: st.DrawFn) -> AutoscalerSpec:
    prefill, decode = draw(pools()), draw(pools())
    if prefill.target is not None and prefill.target == decode.target:  # refused: one target, two pools
        decode = PoolSpec(decode.min_replicas, decode.max_replicas, decode.gpus_per_replica, None)
    floor = prefill.min_replicas * prefill.gpus_per_replica + decode.min_replicas * decode.gpus_per_replica
    budget = draw(st.none() | st.integers(max(floor, 1), max(floor, 1) + 500))
    return AutoscalerSpec(
        prefill=prefill,
        decode=decode,
        ttft=draw(_slos),
        itl=draw(_slos),
        gpu_budget=budget,
        pod_startup_s=draw(st.floats(min_value=0, max_value=3600)),
        behavior=Behavior(draw(_rules), draw(_rules)),
        mode=draw(st.sampled_from(list(Mode))),
        forecaster=draw(st.sampled_from(list(Forecaster))),
        profile=draw(st.sampled_from(["llama-3.1-8b-h100-tp1", "llama-3.3-70b-h100-tp4", "/profiles/mine.yaml"])),
        metrics=draw(metrics()),
    )


@settings(max_examples=100, deadline=None)
@given(specs())
def test_round_trip_spec_dict_spec(spec: AutoscalerSpec) -> None:
    data = spec_to_dict(spec)
    assert spec_from_dict(data) == spec
    assert spec_from_dict(json.loads(json.dumps(data))) == spec  # what the Kubernetes API hands back
    assert spec_from_dict(yaml.safe_load(yaml.safe_dump(data))) == spec  # what a scenario file holds


@settings(max_examples=50, deadline=None)
@given(specs())
def test_dict_is_a_fixed_point(spec: AutoscalerSpec) -> None:
    data = spec_to_dict(spec)
    assert spec_to_dict(spec_from_dict(data)) == data
