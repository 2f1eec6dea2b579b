"""The lower bound of sim.feasibility: which windows a change's pods were ordered for blind, the spliced
counterfactual, and the GPU-hours of holding a level."""

from __future__ import annotations

import numpy as np
import pytest

from sim.feasibility import hold_bound_gpu_hours, spliced, windows_ordered_before
from sim.workload import Workload


def _w(name: str, arrivals: list[float], prompt: int) -> Workload:
    n = len(arrivals)
    return Workload(name, np.array(arrivals), np.full(n, prompt), np.full(n, 10), 100.0)


def test_spliced_keeps_the_prefix_and_continues_without_the_change() -> None:
    changed = _w("c", [1.0, 5.0, 10.0, 11.0, 12.0], prompt=7)
    no_change = _w("n", [2.0, 6.0, 30.0], prompt=3)
    out = spliced(changed, no_change, 10.0, "cf")
    assert out.arrival_s.tolist() == [1.0, 5.0, 30.0]
    assert out.prompt_tokens.tolist() == [7, 7, 3]
    assert out.name == "cf" and out.horizon_s == 100.0


def test_windows_ordered_before_the_change() -> None:
    # change at minute 20, 120 s start-up: minutes 20 and 21 end by 22:00, all their pods ordered before 20:00
    assert windows_ordered_before(1200.0, 120.0, 60.0, 60) == [20, 21]
    # a change mid-window: the window it falls in counts too (it ends at 21:00, its pods ordered by 19:00)
    assert windows_ordered_before(1230.0, 120.0, 60.0, 60) == [20, 21]
    assert windows_ordered_before(1230.0, 80.0, 60.0, 60) == [20]
    assert windows_ordered_before(1200.0, 30.0, 60.0, 60) == []
    assert windows_ordered_before(3550.0, 600.0, 60.0, 60) == [59]  # only the last window is left
    assert windows_ordered_before(3600.0, 600.0, 60.0, 60) == []  # past the end
    with pytest.raises(ValueError, match="window_s > 0"):
        windows_ordered_before(0.0, 120.0, 0.0, 60)


def test_hold_bound_raises_each_window_to_the_hold_until_the_index() -> None:
    needs = [[2, 1], [5, 4], [3, 3]]
    # windows 0 and 1 at least (4, 4): (4+4) + (5+4), then window 2's own need (3+3): 23 replica-minutes
    assert hold_bound_gpu_hours(needs, (4, 4), 2, 60.0, 1) == pytest.approx(23 / 60)
    assert hold_bound_gpu_hours(needs, (4, 4), 0, 60.0, 2) == pytest.approx(2 * 18 / 60)
