"""Fixed TTFT/ITL percentiles (``extra_percentiles``, for the External Metrics API): grouped like the SLO's own
quantile, so the number of queries per refresh does not depend on the number of autoscalers, and a percentile equal
to an SLO's reuses that very query."""

from __future__ import annotations

import pytest

from autoscaler.core.spec import SLO, AutoscalerSpec, MetricsSpec
from autoscaler.prometheus import (
    BUILTIN_PROFILES,
    FE_ITL_Q,
    FE_TTFT_Q,
    W_ITL_Q,
    W_TTFT_Q,
    PrometheusMetricsSource,
    build_query,
    percentile_role,
    plan_queries,
    query_keys,
)

Q = (0.5, 0.9, 0.99)


def specs(n: int, **kw: object) -> dict[str, AutoscalerSpec]:
    return {f"ns/m{i}": AutoscalerSpec(metrics=MetricsSpec(selector=(("model_name", f"m{i}"),)), **kw)  # type: ignore[arg-type]
            for i in range(n)}  # fmt: skip


@pytest.mark.parametrize("n", [1, 10, 500])
def test_query_count_does_not_grow_with_autoscalers(n: int) -> None:
    plain = plan_queries(specs(n), BUILTIN_PROFILES)
    extra = plan_queries(specs(n), BUILTIN_PROFILES, Q)
    # SLO p99 for both signals: p99 is the same query; p50 and p90 add one query per histogram kind
    assert len(extra.values_by_key) - len(plain.values_by_key) == 2 * 4
    assert len(plain.values_by_key) == 15


def test_a_different_slo_percentile_adds_its_own_group() -> None:
    mixed = {**specs(3), **{f"x/{k}": v for k, v in specs(2, ttft=SLO(0.95, 1.0)).items()}}
    plan = plan_queries(mixed, BUILTIN_PROFILES, Q)
    quantiles = sorted(k.quantile for k in plan.values_by_key if k.kind == FE_TTFT_Q and k.quantile is not None)
    assert quantiles == [0.5, 0.9, 0.95, 0.99], "one query per distinct quantile, shared by every autoscaler"


def test_roles_and_queries() -> None:
    keys = query_keys(specs(1)["ns/m0"], BUILTIN_PROFILES, Q)
    for kind in (FE_TTFT_Q, FE_ITL_Q, W_TTFT_Q, W_ITL_Q):
        for q in Q:
            assert keys[percentile_role(kind, q)].quantile == q
    assert keys[percentile_role(FE_TTFT_Q, 0.99)] == keys[FE_TTFT_Q], "the SLO's own query, not a second one"
    text = build_query(keys[percentile_role(W_ITL_Q, 0.9)], BUILTIN_PROFILES["vllm"], {"model_name": {"m0"}})
    assert text.startswith("histogram_quantile(0.9, sum by (le, model_name, role)")
    custom = AutoscalerSpec(metrics=MetricsSpec(source="custom", custom_queries=(("ttft_s", "q{{selector}}"),)))
    assert not any("@" in role for role in query_keys(custom, BUILTIN_PROFILES, Q)), "no histogram to ask"


def test_bad_percentiles_are_refused() -> None:
    with pytest.raises(ValueError, match="percentile must be in"):
        PrometheusMetricsSource("http://127.0.0.1:1", extra_percentiles=(1.5,))
    source = PrometheusMetricsSource("http://127.0.0.1:1", extra_percentiles=(0.9, 0.5, 0.9))
    assert source.extra_percentiles == (0.5, 0.9)
    assert source.percentiles("never-refreshed") == {}
