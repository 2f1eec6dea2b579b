"""The capacity model's decode batch is what the simulator's scheduler runs.

Poisson arrivals of prefilled requests (their KV already transferred) into one decode-role ``InstanceScheduler``;
the time-averaged running batch is compared with ``capacity.decode_batch``'s Little's-law fixed point
N = r·t(N, N·ctx) at the sample's output rate and output-weighted context (``Load.decode_context_scale``).
The ITL tail is reported, not asserted tightly: the model's batch-only tail (N + z·√N at the mean context) is
~13 % under the engine's p99 step on a chat mix whose contexts vary (measured: 14.2 ms against 12.4 ms).
"""

from __future__ import annotations

import numpy as np
import pytest

from autoscaler.core.capacity import Load, predict_decode
from autoscaler.core.latency import LatencyProfile
from autoscaler.profiles import load_profile
from sim.request import Request
from sim.scheduler import InstanceScheduler

PROFILE = load_profile("llama-3.1-8b-h100-tp1")


def steady_decode(
    profile: LatencyProfile, rate_per_s: float, prompts: np.ndarray, outputs: np.ndarray, seed: int = 0
) -> tuple[float, float]:
    """Time-averaged decode batch and p99 step time over the middle of the run (warm-up and drain cut off)."""
    arrivals = np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate_per_s, len(prompts)))
    sched = InstanceScheduler("decode", profile)
    lo_s, hi_s = 0.2 * arrivals[-1], 0.9 * arrivals[-1]
    t, i, n = 0.0, 0, len(prompts)
    durations, batches = [], []
    while True:
        while i < n and arrivals[i] <= t:
            req = Request(i, int(prompts[i]), int(outputs[i]))
            req.tokens_to_compute = 0  # its KV arrived from a prefill instance
            sched.waiting.append(req)
            i += 1
        end = sched.form_step(t)
        if end is None:
            if i >= n:
                break
            t = float(arrivals[i])
            continue
        sched.commit_step()
        if lo_s < t < hi_s:
            durations.append(end - t)
            batches.append(sched.decode_batch)
        t = end
    d = np.array(durations)
    return float(np.sum(np.array(batches) * d) / d.sum()), float(np.quantile(d, 0.99))


def _load(rate_per_s: float, prompts: np.ndarray, outputs: np.ndarray, weighted: bool) -> Load:
    p, o = prompts.astype(float), outputs.astype(float)
    scale = float(np.sum(o * (p + o / 2)) / np.sum(o) / (p.mean() + o.mean() / 2)) if weighted else 1.0
    return Load(rate_per_s, float(p.mean()), float(o.mean()), scale)


@pytest.mark.parametrize("mix", ["fixed", "exp-output", "chat"])
def test_decode_batch_matches_the_scheduler(mix: str) -> None:
    rng = np.random.default_rng(1)
    n = 6000
    prompts = {
        "fixed": np.full(n, 1000),
        "exp-output": np.full(n, 1000),
        "chat": np.minimum(32768, rng.lognormal(np.log(2000) - 0.5, 1.0, n)).astype(np.int64) + 1,
    }[mix]
    outputs = np.full(n, 200) if mix == "fixed" else np.maximum(1, rng.exponential(250, n)).astype(np.int64)
    batch, _ = steady_decode(PROFILE, 8.0, prompts, outputs)
    pred = predict_decode(PROFILE, _load(8.0, prompts, outputs, weighted=True), 1, 0.99)
    assert pred.mean_batch == pytest.approx(batch, rel=0.05), mix
