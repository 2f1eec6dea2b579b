"""GPU budget split between the prefill and decode pools, by SLO pressure.

When both pools' desired replicas cost more GPUs than the budget, the pool further above its target (highest
pressure: observed percentile / target, or what the model says it needs / what it has) is served first, up to
its desired count; the other pool gets what is left. Neither pool goes below its minimum replicas, even if the
minimums alone exceed the budget (the bound is the user's, the budget too: bounds win, and the caller reports
it). A proportional cut (Dynamo G2) would starve the breaching pool as much as the healthy one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PoolAsk:
    desired_replicas: int
    min_replicas: int
    gpus_per_replica: int
    pressure: float  # > 1: above target; ties go to prefill (TTFT is what users see first)


@dataclass(frozen=True)
class BudgetSplit:
    prefill_replicas: int
    decode_replicas: int
    prefill_capped: bool
    decode_capped: bool
    priority: str  # "prefill" | "decode" | "" when the budget did not bind


def split_budget(budget_gpus: int | None, prefill: PoolAsk, decode: PoolAsk) -> BudgetSplit:
    """Replicas per pool within ``budget_gpus`` (``None``: unbounded)."""
    for name, ask in (("prefill", prefill), ("decode", decode)):
        if ask.gpus_per_replica < 1 or ask.min_replicas < 0 or ask.desired_replicas < 0:
            raise ValueError(f"{name}: invalid PoolAsk {ask!r}")
    total = (
        prefill.desired_replicas * prefill.gpus_per_replica
        + decode.desired_replicas * decode.gpus_per_replica
    )
    if budget_gpus is None or total <= budget_gpus:
        return BudgetSplit(prefill.desired_replicas, decode.desired_replicas, False, False, "")
    prefill_first = prefill.pressure >= decode.pressure
    first, second = (prefill, decode) if prefill_first else (decode, prefill)
    remaining = budget_gpus - sum(a.min_replicas * a.gpus_per_replica for a in (first, second))
    first_n = _grant(first, remaining)
    remaining -= (first_n - first.min_replicas) * first.gpus_per_replica
    second_n = _grant(second, remaining)
    p_n, d_n = (first_n, second_n) if prefill_first else (second_n, first_n)
    return BudgetSplit(
        p_n,
        d_n,
        p_n < prefill.desired_replicas,
        d_n < decode.desired_replicas,
        "prefill" if prefill_first else "decode",
    )


def _grant(ask: PoolAsk, remaining_gpus: int) -> int:
    """Minimum replicas plus as many more as the remaining GPUs pay for, up to the desired count."""
    if ask.desired_replicas <= ask.min_replicas:
        return ask.min_replicas
    extra = max(0, remaining_gpus) // ask.gpus_per_replica
    return min(ask.desired_replicas, ask.min_replicas + extra)
