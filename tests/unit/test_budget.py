"""GPU budget split by SLO pressure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.core.budget import PoolAsk, split_budget


@pytest.mark.parametrize(
    ("budget", "prefill", "decode", "expected"),
    [
        pytest.param(
            None, PoolAsk(10, 1, 1, 2.0), PoolAsk(10, 1, 1, 1.0), (10, 10, False, False), id="unbounded"
        ),
        pytest.param(
            20, PoolAsk(10, 1, 1, 2.0), PoolAsk(10, 1, 1, 1.0), (10, 10, False, False), id="fits-exactly"
        ),
        pytest.param(
            12,
            PoolAsk(10, 1, 1, 2.0),
            PoolAsk(10, 1, 1, 0.5),
            (10, 2, False, True),
            id="prefill-breaching-first",
        ),
        pytest.param(
            12,
            PoolAsk(10, 1, 1, 0.5),
            PoolAsk(10, 1, 1, 1.5),
            (2, 10, True, False),
            id="decode-breaching-first",
        ),
        pytest.param(
            12, PoolAsk(10, 3, 1, 5.0), PoolAsk(10, 4, 1, 0.1), (8, 4, True, True), id="never-below-min"
        ),
        pytest.param(
            5,
            PoolAsk(4, 3, 1, 1.0),
            PoolAsk(4, 4, 1, 2.0),
            (3, 4, True, False),
            id="minimums-exceed-budget-bounds-win",
        ),
        pytest.param(
            16,
            PoolAsk(4, 1, 4, 2.0),
            PoolAsk(4, 1, 2, 1.0),
            (3, 2, True, True),
            id="gpus-per-replica-counted",
        ),
    ],
)
def test_split_table(
    budget: int | None, prefill: PoolAsk, decode: PoolAsk, expected: tuple[int, int, bool, bool]
) -> None:
    s = split_budget(budget, prefill, decode)
    assert (s.prefill_replicas, s.decode_replicas, s.prefill_capped, s.decode_capped) == expected


def test_not_proportional() -> None:
    # Dynamo G2 would scale both by 12/20 (6 and 6); by pressure the breaching pool keeps what it needs.
    s = split_budget(12, PoolAsk(10, 1, 1, 3.0), PoolAsk(10, 1, 1, 0.9))
    assert s.prefill_replicas == 10 and s.priority == "prefill"


def test_invalid_ask() -> None:
    with pytest.raises(ValueError, match="decode"):
        split_budget(4, PoolAsk(1, 1, 1, 1.0), PoolAsk(1, 1, 0, 1.0))


ask = st.builds(
    PoolAsk,
    desired_replicas=st.integers(0, 40),
    min_replicas=st.integers(0, 5),
    gpus_per_replica=st.integers(1, 8),
    pressure=st.floats(0, 10),
).map(
    lambda a: PoolAsk(max(a.desired_replicas, a.min_replicas), a.min_replicas, a.gpus_per_replica, a.pressure)
)


@given(budget=st.integers(0, 200), p=ask, d=ask)
def test_budget_and_bounds_respected(budget: int, p: PoolAsk, d: PoolAsk) -> None:
    s = split_budget(budget, p, d)
    assert p.min_replicas <= s.prefill_replicas <= p.desired_replicas
    assert d.min_replicas <= s.decode_replicas <= d.desired_replicas
    used = s.prefill_replicas * p.gpus_per_replica + s.decode_replicas * d.gpus_per_replica
    floor = p.min_replicas * p.gpus_per_replica + d.min_replicas * d.gpus_per_replica
    assert used <= max(budget, floor)
