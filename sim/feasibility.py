"""What any autoscaler must spend to hold every window of a sudden change it cannot foresee (issue 16).

Three facts give a lower bound that holds for every policy, whatever it forecasts:

1. Pods ready at time t were ordered by t - start-up; so in a window that ends within one start-up after a change,
   every pod ready was ordered before the change, on what the load showed before it
   (``windows_ordered_before``).
2. Before the change, the changed workload and its no-change counterfactual are the same requests
   (``spliced`` builds the counterfactual so that they are): a policy does the same on both until the change.
3. A window passes only if the pods ready in it reach the oracle's need for it (``sim.oracle``: the fewest
   replicas that meet the SLO for that window's requests alone, on warm pools starting empty).

So holding every window of the change means holding, before it, H = the largest need of those windows; and a
policy that does not know the change's minute holds H at every minute, on the changed workload and on the
counterfactual alike (``hold_bound_gpu_hours``). ``bench/surge_feasibility.py`` prints the bound against each
workload's static-best.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sim.workload import Workload


def spliced(changed: Workload, no_change: Workload, at_s: float, name: str) -> Workload:
    """``changed``'s requests before ``at_s``, then ``no_change``'s: the traffic a policy cannot tell apart from
    ``changed`` until ``at_s``."""
    a = changed.arrival_s < at_s
    b = no_change.arrival_s >= at_s
    return Workload(
        name,
        np.concatenate([changed.arrival_s[a], no_change.arrival_s[b]]),
        np.concatenate([changed.prompt_tokens[a], no_change.prompt_tokens[b]]),
        np.concatenate([changed.output_tokens[a], no_change.output_tokens[b]]),
        changed.horizon_s if changed.horizon_s is not None else no_change.horizon_s,
    )


def windows_ordered_before(at_s: float, startup_s: float, window_s: float, n_windows: int) -> list[int]:
    """Indices of the windows that end after ``at_s`` and within one start-up of it: they hold requests of the
    change, and every pod ready in them was ordered before ``at_s``."""
    if not (window_s > 0 and startup_s >= 0 and at_s >= 0):
        raise ValueError(f"need window_s > 0, startup_s >= 0, at_s >= 0; got {window_s}, {startup_s}, {at_s}")
    return [i for i in range(n_windows) if at_s < (i + 1) * window_s <= at_s + startup_s]


def hold_bound_gpu_hours(
    needs: Sequence[Sequence[int]],
    hold: tuple[int, int],
    until_index: int,
    window_s: float,
    gpus_per_replica: int,
) -> float:
    """GPU-hours of at least ``hold`` (prefill, decode) in the windows before ``until_index`` and the oracle's
    ``needs`` (per window, [prefill, decode]) after it: the least a policy holding every window can spend."""
    total = 0
    for i, (p, d) in enumerate(needs):
        if i < until_index:
            p, d = max(p, hold[0]), max(d, hold[1])
        total += p + d
    return total * window_s / 3600.0 * gpus_per_replica
