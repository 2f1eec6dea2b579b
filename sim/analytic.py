"""Closed-form and numerically exact queueing results, used as simulator oracles and first-cut sizing rules.

Formulas and test vectors: /work/shared/reference/queueing.md (§2 M/D/1 and DistServe, §3 M/G/1 P-K and Beneš,
§4 M/M/c Erlang C, §5 decode Little's-law fixed point, §7 approximations). Times are in seconds, rates per second.

* ``mg1_wait_distribution`` evaluates Beneš' formula P(Wq <= t) = Σ (1-ρ) ρⁿ F_e^{*n}(t) on a uniform grid with
  one FFT (the recipe of queueing.md §3), which is exact up to the grid and stable where Erlang's alternating
  M/D/1 sum loses all precision in float64. M/D/1 percentiles use it with deterministic service.
* ``erlang_c`` uses the Erlang-B recursion so large server counts do not overflow.
* ``decode_fixed_point`` solves N = λ·L·t(N) for a linear step model t(N) = α + β·N + γ·N·E[ctx];
  ``decode_fixed_point_model`` does the same for any ``StepModel``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize

from autoscaler.core.capacity import erlang_b as erlang_b  # re-exported: the oracles share the recursion
from autoscaler.core.capacity import erlang_c as capacity_erlang_c
from autoscaler.core.latency import LatencyProfile, StepModel, prefill_time_s

# ---------------------------------------------------------------------------------------------------------------
# M/G/1 and M/D/1
# ---------------------------------------------------------------------------------------------------------------


def _check_rho(rho: float) -> None:
    if not 0 <= rho < 1:
        raise ValueError(f"unstable queue: utilisation ρ = {rho:.4g} must be < 1")


def md1_mean_wait(lam: float, d: float) -> float:
    """M/D/1 mean wait (P-K with c_s² = 0): ρ·D / (2(1 − ρ))."""
    rho = lam * d
    _check_rho(rho)
    return rho * d / (2.0 * (1.0 - rho))


def mg1_mean_wait(lam: float, mean_s: float, scv: float) -> float:
    """M/G/1 Pollaczek–Khinchine mean wait: ρ(1 + c_s²)E[S] / (2(1 − ρ)); ``scv`` is c_s² = Var[S]/E[S]²."""
    if mean_s <= 0 or scv < 0:
        raise ValueError("mean_s must be > 0 and scv >= 0")
    rho = lam * mean_s
    _check_rho(rho)
    return rho * (1.0 + scv) * mean_s / (2.0 * (1.0 - rho))


def distserve_avg_ttft(rate: float, d: float, speedup: float = 1.0) -> float:
    """DistServe single-instance prefill TTFT with intra-op speedup K: D/K + R·D² / (2K(K − R·D))."""
    if not speedup >= 1:
        raise ValueError("speedup must be >= 1")
    _check_rho(rate * d / speedup)
    return d / speedup + rate * d * d / (2.0 * speedup * (speedup - rate * d))


@dataclass(frozen=True)
class WaitDistribution:
    """A waiting-time law on a uniform grid: ``cdf[k]`` = P(W <= (k+1)·step_s); ``atom_zero`` = P(W = 0)."""

    step_s: float
    cdf: np.ndarray
    atom_zero: float

    def quantile(self, p: float) -> float:
        """Smallest t with P(W <= t) >= p (linear within a grid cell)."""
        if not 0 < p < 1:
            raise ValueError(f"p must be in (0, 1), got {p}")
        if p <= self.atom_zero:
            return 0.0
        k = int(np.searchsorted(self.cdf, p, side="left"))
        if k >= self.cdf.size:
            raise ValueError(f"quantile {p} lies beyond the grid ({self.cdf.size * self.step_s:g} s); widen span_s")
        lo = self.cdf[k - 1] if k > 0 else self.atom_zero
        hi = self.cdf[k]
        frac = 0.0 if hi <= lo else (p - lo) / (hi - lo)
        return float((k + frac) * self.step_s)

    def cdf_at(self, t: float) -> float:
        if t < 0:
            return 0.0
        grid = (np.arange(self.cdf.size) + 1.0) * self.step_s
        return float(np.interp(t, np.concatenate([[0.0], grid]), np.concatenate([[self.atom_zero], self.cdf])))

    def mean(self) -> float:
        """Mean from the grid (each cell's mass at its midpoint)."""
        masses = np.diff(np.concatenate([[self.atom_zero], self.cdf]))
        return float(np.sum(masses * (np.arange(self.cdf.size) + 0.5) * self.step_s))


ServiceLaw = Any  # a float (deterministic), a scipy.stats frozen distribution, or a 1-D array of samples


def _service_sf(service: ServiceLaw) -> tuple[float, Callable[[np.ndarray], np.ndarray]]:
    """(mean, survival function) for a deterministic value, a frozen scipy distribution or samples."""
    if isinstance(service, int | float):
        d = float(service)
        if d <= 0:
            raise ValueError("deterministic service time must be > 0")
        return d, lambda x: (x < d).astype(np.float64)
    if hasattr(service, "sf") and hasattr(service, "mean"):
        return float(service.mean()), lambda x: np.asarray(service.sf(x), dtype=np.float64)
    samples = np.sort(np.asarray(service, dtype=np.float64).ravel())
    if samples.size == 0 or samples[0] < 0 or not np.all(np.isfinite(samples)):
        raise ValueError("service samples must be a non-empty array of finite values >= 0")
    n = samples.size
    return float(samples.mean()), lambda x: 1.0 - np.searchsorted(samples, x, side="right") / n


def mg1_wait_distribution(
    lam: float, service: ServiceLaw, *, n_cells: int = 2**20, span_s: float | None = None
) -> WaitDistribution:
    """Exact FCFS M/G/1 waiting-time law by Beneš' formula, evaluated with one FFT (queueing.md §3).

    The equilibrium-residual density f_e(x) = (1 − F_S(x))/E[S] is discretised on ``n_cells`` cells covering
    ``span_s`` (default 60·E[S]/(1 − ρ)) at cell midpoints; the wait is a geometric(ρ) sum of residuals:
    W(z) = (1 − ρ) / (1 − ρ·F_e(z)).
    """
    mean_s, sf = _service_sf(service)
    rho = lam * mean_s
    _check_rho(rho)
    span = span_s if span_s is not None else 60.0 * mean_s / (1.0 - rho)
    h = span / n_cells
    mids = (np.arange(n_cells) + 0.5) * h
    fe = sf(mids) * h / mean_s
    # The residual is a probability law: renormalise the midpoint masses so they sum to 1 (otherwise a cell
    # count that does not divide E[S] leaves an excess δ that inflates the total wait mass by ρδ/(1 − ρ)).
    fe /= fe.sum()
    spectrum = np.fft.rfft(fe, 2 * n_cells)
    w = np.fft.irfft((1.0 - rho) / (1.0 - rho * spectrum), 2 * n_cells)[:n_cells]
    # Mass index k sits at k·h; index 0 holds the atom 1 − ρ at zero plus the first cell's mass.
    masses = np.clip(w, 0.0, None)
    masses[0] -= 1.0 - rho
    masses[0] = max(masses[0], 0.0)
    cdf = (1.0 - rho) + np.cumsum(masses)
    return WaitDistribution(step_s=h, cdf=np.minimum(cdf, 1.0), atom_zero=1.0 - rho)


def mg1_wait_quantile(lam: float, service: ServiceLaw, p: float, **kw: Any) -> float:
    return mg1_wait_distribution(lam, service, **kw).quantile(p)


def md1_wait_quantile(lam: float, d: float, p: float) -> float:
    """M/D/1 waiting-time quantile (Erlang's law, evaluated by Beneš/FFT: stable at every t)."""
    return mg1_wait_quantile(lam, float(d), p)


def md1_wait_cdf(lam: float, d: float, t: float) -> float:
    """P(Wq <= t) for M/D/1 (Erlang's law, by Beneš/FFT on 2^20 cells)."""
    return mg1_wait_distribution(lam, float(d)).cdf_at(t)


def mg1_response_distribution(
    lam: float, service: ServiceLaw, *, n_cells: int = 2**20, span_s: float | None = None
) -> WaitDistribution:
    """Response time T = Wq + S (independent under FCFS): the wait law convolved with the service law."""
    mean_s, sf = _service_sf(service)
    rho = lam * mean_s
    _check_rho(rho)
    span = span_s if span_s is not None else 60.0 * mean_s / (1.0 - rho)
    wait = mg1_wait_distribution(lam, service, n_cells=n_cells, span_s=span)
    h = wait.step_s
    edges = np.arange(n_cells + 1) * h
    service_cdf = 1.0 - sf(edges)
    s_masses = np.diff(service_cdf)
    s_masses[0] += service_cdf[0]
    w_masses = np.diff(np.concatenate([[0.0], wait.cdf]))
    conv = np.fft.irfft(np.fft.rfft(w_masses, 2 * n_cells) * np.fft.rfft(s_masses, 2 * n_cells), 2 * n_cells)
    cdf = np.minimum(np.cumsum(np.clip(conv[:n_cells], 0.0, None)), 1.0)
    return WaitDistribution(step_s=h, cdf=cdf, atom_zero=0.0)


# ---------------------------------------------------------------------------------------------------------------
# M/M/c
# ---------------------------------------------------------------------------------------------------------------


def erlang_c(c: int, a: float) -> float:
    """Probability of waiting in M/M/c with offered load a = λ/μ Erlangs; unlike the policy's lenient
    ``capacity.erlang_c`` (which reads an unstable queue as 1.0), an oracle refuses ρ ≥ 1."""
    if c < 1:
        raise ValueError("c must be >= 1")
    _check_rho(a / c)
    return capacity_erlang_c(c, a)


def mmc_mean_wait(lam: float, mu: float, c: int) -> float:
    """E[Wq] = C(c, a) / (cμ − λ)."""
    return erlang_c(c, lam / mu) / (c * mu - lam)


def mmc_wait_tail(lam: float, mu: float, c: int, t: float) -> float:
    """P(Wq > t) = C(c, a)·exp(−(cμ − λ)t) for t >= 0."""
    if t < 0:
        return 1.0
    return erlang_c(c, lam / mu) * math.exp(-(c * mu - lam) * t)


def mmc_wait_quantile(lam: float, mu: float, c: int, p: float) -> float:
    """t_p = max(0, ln(C/(1 − p)) / (cμ − λ))."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    cw = erlang_c(c, lam / mu)
    return max(0.0, math.log(cw / (1.0 - p)) / (c * mu - lam))


def mmc_min_servers(lam: float, mu: float, p: float, max_wait_s: float, max_servers: int = 100_000) -> int:
    """Smallest c whose p-quantile wait is <= max_wait_s (the Erlang-C sizing rule of queueing.md §4)."""
    c = max(1, math.floor(lam / mu) + 1)
    while c <= max_servers:
        if mmc_wait_quantile(lam, mu, c, p) <= max_wait_s:
            return c
        c += 1
    raise ValueError(f"no server count up to {max_servers} meets the target")


# ---------------------------------------------------------------------------------------------------------------
# Approximations (sanity bands only; queueing.md §7)
# ---------------------------------------------------------------------------------------------------------------


def kingman_mean_wait(lam: float, mean_s: float, ca2: float, cs2: float) -> float:
    rho = lam * mean_s
    _check_rho(rho)
    return rho / (1.0 - rho) * (ca2 + cs2) / 2.0 * mean_s


def allen_cunneen_mean_wait(lam: float, mu: float, c: int, ca2: float, cs2: float) -> float:
    return mmc_mean_wait(lam, mu, c) * (ca2 + cs2) / 2.0


# ---------------------------------------------------------------------------------------------------------------
# Decode: Little's-law fixed point
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeOperatingPoint:
    running_seqs: float  # N, mean sequences in the running batch
    itl_s: float  # mean inter-token latency t(N)
    output_tokens_per_s: float  # λ·L̄ (throughput equals demand in steady state)


def decode_fixed_point(
    lam: float,
    mean_output_tokens: float,
    alpha_s: float,
    beta_s_per_seq: float,
    gamma_s_per_context_token: float = 0.0,
    mean_context_tokens: float = 0.0,
    *,
    max_num_seqs: int | None = None,
    kv_capacity_tokens: float | None = None,
) -> DecodeOperatingPoint:
    """N = λL̄α / (1 − λL̄(β + γE[ctx])), ITL = t(N) = α + βN + γN·E[ctx] (queueing.md §5).

    Raises ValueError when the load is unstable (λL̄(β + γE[ctx]) >= 1), N exceeds ``max_num_seqs`` or
    N·E[ctx] exceeds ``kv_capacity_tokens``.
    """
    if lam < 0 or mean_output_tokens <= 0 or alpha_s <= 0:
        raise ValueError("need lam >= 0, mean_output_tokens > 0 and alpha_s > 0")
    demand = lam * mean_output_tokens
    per_seq = beta_s_per_seq + gamma_s_per_context_token * mean_context_tokens
    load = demand * per_seq
    if load >= 1.0:
        raise ValueError(f"unstable decode: λ·L̄·(β + γ·E[ctx]) = {load:.4g} >= 1")
    n = demand * alpha_s / (1.0 - load)
    _check_decode_limits(n, mean_context_tokens, max_num_seqs, kv_capacity_tokens)
    return DecodeOperatingPoint(n, alpha_s + per_seq * n, demand)


def _check_decode_limits(
    n: float, mean_context_tokens: float, max_num_seqs: int | None, kv_capacity_tokens: float | None
) -> None:
    if max_num_seqs is not None and n > max_num_seqs:
        raise ValueError(f"decode needs N = {n:.1f} running sequences > max_num_seqs = {max_num_seqs}")
    if kv_capacity_tokens is not None and n * mean_context_tokens > kv_capacity_tokens:
        raise ValueError(
            f"decode needs {n * mean_context_tokens:.0f} KV tokens > capacity {kv_capacity_tokens:.0f}"
        )


def decode_fixed_point_model(
    step: StepModel,
    lam: float,
    mean_output_tokens: float,
    mean_context_tokens: float,
    *,
    max_num_seqs: int = 256,
    kv_capacity_tokens: float | None = None,
) -> DecodeOperatingPoint:
    """Smallest N with N = λL̄·t(N) for any step model, t(N) = step.decode_step_s(N, N·E[ctx]).

    N is treated as continuous (the time-average batch). Raises ValueError when no fixed point exists up to ``max_num_seqs`` (overload) or the
    KV cache cannot hold it.
    """
    demand = lam * mean_output_tokens
    if demand < 0:
        raise ValueError("lam and mean_output_tokens must be >= 0")
    if demand == 0:
        return DecodeOperatingPoint(0.0, step.decode_step_s(1, mean_context_tokens), 0.0)

    def t(n: float) -> float:
        # A continuous batch size: the models are arithmetic in the batch, so fractional N is meaningful as
        # the time-average batch and keeps the fixed point equal to the closed form for linear models.
        return step.decode_step_s(n, n * mean_context_tokens)  # type: ignore[arg-type]

    def f(n: float) -> float:
        return demand * t(n) - n

    upper = float(max_num_seqs)
    if f(upper) > 0:
        raise ValueError(
            f"unstable decode: {demand:.4g} tokens/s needs more than max_num_seqs = {max_num_seqs} "
            "running sequences"
        )
    # f(0+) > 0; f is continuous between integer steps for linear models; brentq finds the crossing.
    lo = 1e-9
    n = float(optimize.brentq(f, lo, upper, xtol=1e-9)) if f(lo) > 0 else lo
    _check_decode_limits(n, mean_context_tokens, None, kv_capacity_tokens)
    return DecodeOperatingPoint(n, t(n), demand)


# ---------------------------------------------------------------------------------------------------------------
# Prefill service times from a profile (vectorised)
# ---------------------------------------------------------------------------------------------------------------


def prefill_service_times_s(
    profile: LatencyProfile, prompt_tokens: np.ndarray, chunk_tokens: int | None = None
) -> np.ndarray:
    """Per-request prefill time alone on a replica, chunked at ``chunk_tokens`` (default max_num_batched_tokens).

    Equals ``autoscaler.core.latency.prefill_time_s`` elementwise (later chunks attend to earlier ones); evaluates it
    once per distinct prompt length, so a 20k-row trace costs milliseconds. Use it as the M/G/1 service law for
    TTFT oracles.
    """
    chunk = profile.max_num_batched_tokens if chunk_tokens is None else chunk_tokens
    if chunk <= 0:
        raise ValueError(f"chunk_tokens must be > 0, got {chunk}")
    prompts = np.asarray(prompt_tokens, dtype=np.int64)
    values, inverse = np.unique(prompts, return_inverse=True)
    per_value = np.array([prefill_time_s(profile, float(v), chunk) for v in values], dtype=np.float64)
    return np.asarray(per_value[inverse.ravel()], dtype=np.float64)


def prefill_ttft_distribution(
    profile: LatencyProfile, lam: float, prompt_tokens: np.ndarray, *, n_cells: int = 2**20
) -> WaitDistribution:
    """TTFT law of one FCFS prefill replica without batching (M/G/1, service = prefill time of a random prompt
    from ``prompt_tokens``): the oracle for a simulator run with prefill batching off."""
    return mg1_response_distribution(lam, prefill_service_times_s(profile, prompt_tokens), n_cells=n_cells)
