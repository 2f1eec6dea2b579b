"""Request workloads for the simulator: trace readers, transformations and seeded generators.

A :class:`Workload` is three aligned arrays (arrival time, prompt tokens, output tokens), sorted by arrival.

Trace files (``load_trace``), format detected from the extension and the header line:

* Azure LLM inference 2023 CSV: ``TIMESTAMP,ContextTokens,GeneratedTokens`` with timestamps such as
  ``2023-11-16 18:17:03.9799600``; arrivals become seconds after the earliest row.
* Mooncake JSONL (``.jsonl``, or a first line starting with ``{``): one object per line with ``timestamp``
  (milliseconds), ``input_length``, ``output_length`` (``hash_ids`` is accepted and ignored).
* Plain CSV: ``arrival_s,prompt_tokens,output_tokens`` (vidur's ``arrived_at,num_prefill_tokens,
  num_decode_tokens`` is accepted too).

Every row must parse: a bad row raises :class:`TraceError` naming the file, the 1-based line number and the field.
Prompt and output lengths must be >= 1. Rows whose timestamps are out of order are kept and stably sorted, with a
logged warning. Transformations are applied in this order: window selection on trace time (seconds after the first
row; the window start becomes time 0), then rate scaling (``rate_scale=K`` divides arrival times by K, so the rate is
K times higher), then length caps.

Generator spec strings (``generate``)::

    SPEC    := STREAM ( "+" STREAM )*          streams are independent and superposed (e.g. per-client streams)
    STREAM  := KIND ":" PARAM ( "," PARAM )*
    PARAM   := KEY "=" VALUE                   VALUE is a number, a word/path, or a DIST
    DIST    := NAME "(" [ ARG ( "," ARG )* ] ")"

Arrival kinds (times in seconds, rates in requests per second; every kind takes ``duration`` (required),
``start`` (offset added to every arrival, default 0) and ``cv`` (inter-arrival coefficient of variation,
default 1 = Poisson; other values give a Gamma renewal process with that CV)):

    poisson:   rate
    gamma:     rate, cv
    sine:      rate (mean), amplitude (relative, 0..1), period, phase (s, default 0)      alias: diurnal
    step:      rate, to (rate after the step), at (step time)
    spike:     rate, peak (rate during the spike), at, width
    ramp:      rate, to, at, width (linear change from rate to ``to`` between at and at+width)
    piecewise: rates (slash-separated, e.g. 2/5/3), every (seconds per segment)
    trace:     path, plus optional rate_scale, window_start, window_end, max_prompt, max_output

Closed-loop kind (``parse_closed_loop``; no arrival times of its own, see :class:`ClosedLoopSpec`)::

    closed:    users, requests and/or duration, think_s (default 0), plus the length keys below

Time-varying rates are realised exactly by time rescaling: a unit-rate renewal process in operational time is
mapped through the inverse of the cumulative rate Λ(t) (for cv=1 this is the non-homogeneous Poisson process,
equivalent to thinning).

Length keys: ``prompt=DIST``, ``output=DIST``, or ``lengths=empirical(PATH)`` (joint resampling of
(prompt, output) pairs from a trace), and caps ``max_prompt``/``max_output``. Defaults: ``prompt=azure_conv()``,
``output=azure_conv()`` (the Azure conversation marginals, embedded). Distributions (means in tokens; samples
are rounded to integers and clipped to >= 1):

    const(v)                     alias fixed(v)
    uniform(lo, hi)
    exp(mean)                    alias exponential(mean)
    lognormal(mean, sigma)       sigma of log(x); mean is the arithmetic mean
    pareto(alpha, xmin)
    plmix(mean, sigma, alpha, xmin, p_tail)   Pareto tail with probability p_tail, else lognormal (ServeGen)
    empirical(PATH)              resample the matching column of a trace file
    azure_conv()  azure_code()   embedded quantile functions of the Azure 2023 traces

Example: ``poisson:rate=5,duration=600,prompt=lognormal(1000,1.0),output=exp(200)
+ gamma:rate=1,cv=4,duration=600,prompt=const(8000),output=const(20)``.

Built-in workloads: ``default_workload(seed)`` (30 min of Azure-conversation-like traffic, no files) and
``demo_workload(seed)`` (25 min: baseline, a prompt-heavy surge, then a generation-heavy surge, sized for
Llama-3.1-8B on H100). ``arrival_stats`` computes the burstiness numbers used to compare a stream with a trace.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class TraceError(ValueError):
    """A trace file could not be read; the message names the file, the line and the field."""


class SpecError(ValueError):
    """A generator spec string is malformed; the message names the offending part."""


# Input bounds: what a run may hold before it is refused up front, with the numbers, instead of exhausting memory.
# The simulator keeps ~0.5 KB per request (engine records and queues; measured: +152 MB of peak RSS for +300k
# requests, ``pdscale sim run`` static policy), so 10 million requests is about 5 GiB. 50x the Azure conv trace's
# hour is ~1 million requests.
MAX_REQUESTS = 10_000_000
BYTES_PER_REQUEST = 520
# Longer than any model's context (the largest are ~10M tokens); keeps token arithmetic far from int64 overflow.
MAX_TOKENS_PER_REQUEST = 100_000_000


def check_request_count(n: float, what: str) -> None:
    """Refuse a workload of ``n`` requests (expected or actual) above ``MAX_REQUESTS``, naming the numbers."""
    if not n <= MAX_REQUESTS:  # also catches NaN
        gib = n * BYTES_PER_REQUEST / 2**30
        raise ValueError(
            f"{what}: {n:,.0f} requests exceed the limit of {MAX_REQUESTS:,} per run (about {gib:,.0f} GiB of "
            f"simulator memory at ~{BYTES_PER_REQUEST} bytes per request); shorten the duration or lower the rate"
        )


def _too_long(value: float, field: str) -> str:
    return f"{field}: {value:g} tokens; at most {MAX_TOKENS_PER_REQUEST:,} per request"


@dataclass(frozen=True)
class Workload:
    """Requests sorted by arrival. ``horizon_s`` (optional) is the generated span, which may exceed the last arrival."""

    name: str
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    horizon_s: float | None = field(default=None)

    def __post_init__(self) -> None:
        arrival = np.asarray(self.arrival_s, dtype=np.float64)
        prompt = np.asarray(self.prompt_tokens, dtype=np.int64)
        output = np.asarray(self.output_tokens, dtype=np.int64)
        if not (arrival.ndim == prompt.ndim == output.ndim == 1):
            raise ValueError(f"workload {self.name!r}: arrays must be one-dimensional")
        if not (arrival.shape == prompt.shape == output.shape):
            raise ValueError(
                f"workload {self.name!r}: array lengths differ "
                f"({arrival.size}, {prompt.size}, {output.size})"
            )
        if arrival.size:
            if not np.all(np.isfinite(arrival)):
                raise ValueError(f"workload {self.name!r}: arrival_s has non-finite values")
            if np.any(np.diff(arrival) < 0):
                raise ValueError(f"workload {self.name!r}: arrival_s must be sorted")
            if prompt.min() < 1:
                raise ValueError(f"workload {self.name!r}: prompt_tokens must be >= 1")
            if output.min() < 1:
                raise ValueError(f"workload {self.name!r}: output_tokens must be >= 1")
            for label, tokens in (("prompt_tokens", prompt), ("output_tokens", output)):
                if tokens.max() > MAX_TOKENS_PER_REQUEST:
                    raise ValueError(f"workload {self.name!r}: {_too_long(float(tokens.max()), label)}")
        # Keep private read-only arrays (a caller's writable array is copied, never frozen under its feet).
        for attr, arr in (("arrival_s", arrival), ("prompt_tokens", prompt), ("output_tokens", output)):
            if arr.flags.writeable:
                arr = arr.copy()
                arr.flags.writeable = False
            object.__setattr__(self, attr, arr)

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    @property
    def duration_s(self) -> float:
        """Span of the workload: the generated horizon if known, else the last arrival time."""
        last = float(self.arrival_s[-1]) if self.arrival_s.size else 0.0
        return max(last, self.horizon_s or 0.0)

    @property
    def mean_rate_per_s(self) -> float:
        return len(self) / self.duration_s if self.duration_s > 0 else 0.0

    # ---- transformations (each returns a new Workload) ----

    def scaled(self, rate_scale: float) -> Workload:
        """Compress time by ``rate_scale`` (K > 1 means K times the request rate)."""
        if not (rate_scale > 0 and math.isfinite(rate_scale)):
            raise ValueError(f"rate_scale must be a positive number, got {rate_scale}")
        return Workload(
            f"{self.name}*{rate_scale:g}",
            self.arrival_s / rate_scale,
            self.prompt_tokens,
            self.output_tokens,
            None if self.horizon_s is None else self.horizon_s / rate_scale,
        )

    def window(self, start_s: float, end_s: float) -> Workload:
        """Requests with start_s <= arrival < end_s, re-zeroed so that start_s becomes 0."""
        if not end_s > start_s:
            raise ValueError(f"window end ({end_s}) must exceed start ({start_s})")
        lo, hi = np.searchsorted(self.arrival_s, [start_s, end_s], side="left")
        # An open-ended window (end_s = inf) keeps the original horizon.
        horizon = end_s - start_s if math.isfinite(end_s) else max(self.duration_s - start_s, 0.0)
        return Workload(
            f"{self.name}[{start_s:g}:{end_s:g}]",
            self.arrival_s[lo:hi] - start_s,
            self.prompt_tokens[lo:hi],
            self.output_tokens[lo:hi],
            horizon,
        )

    def capped(self, max_prompt_tokens: int | None = None, max_output_tokens: int | None = None) -> Workload:
        """Clip lengths (vLLM's max_model_len style); requests are kept, not dropped."""
        prompt, output = self.prompt_tokens, self.output_tokens
        if max_prompt_tokens is not None:
            if max_prompt_tokens < 1:
                raise ValueError(f"max_prompt_tokens must be >= 1, got {max_prompt_tokens}")
            prompt = np.minimum(prompt, max_prompt_tokens)
        if max_output_tokens is not None:
            if max_output_tokens < 1:
                raise ValueError(f"max_output_tokens must be >= 1, got {max_output_tokens}")
            output = np.minimum(output, max_output_tokens)
        return Workload(self.name, self.arrival_s, prompt, output, self.horizon_s)

    def shifted(self, offset_s: float) -> Workload:
        return Workload(
            self.name,
            self.arrival_s + offset_s,
            self.prompt_tokens,
            self.output_tokens,
            None if self.horizon_s is None else self.horizon_s + offset_s,
        )

    def summary(self) -> dict[str, float]:
        """Headline statistics (rates, length means and percentiles, inter-arrival CV)."""
        n = len(self)
        out: dict[str, float] = {"requests": float(n), "duration_s": self.duration_s,
                                 "rate_per_s": self.mean_rate_per_s}
        if n == 0:
            return out
        for label, arr in (("prompt", self.prompt_tokens), ("output", self.output_tokens)):
            out[f"{label}_mean"] = float(arr.mean())
            for q in (50, 90, 99):
                out[f"{label}_p{q}"] = float(np.percentile(arr, q))
        gaps = np.diff(self.arrival_s)
        out["interarrival_cv"] = float(gaps.std() / gaps.mean()) if gaps.size > 1 and gaps.mean() > 0 else 0.0
        return out


def arrival_stats(w: Workload, bins_s: Sequence[float] = (1.0, 10.0, 60.0)) -> dict[str, float]:
    """Burstiness statistics used to validate generators against traces (performance-anchors.md §4):
    inter-arrival CV, variance-to-mean ratio of counts per bin (``vmr_<bin>s``) and the peak/mean of 60 s counts.
    Bins are counted from t = 0 over every bin that holds an arrival (a trailing partial bin included)."""
    t = w.arrival_s
    out: dict[str, float] = {}
    if t.size < 3:
        raise ValueError("arrival_stats needs at least 3 arrivals")
    gaps = np.diff(t)
    out["interarrival_cv"] = float(gaps.std() / gaps.mean())
    for b in bins_s:
        counts = np.bincount((t // b).astype(np.int64))
        out[f"vmr_{b:g}s"] = float(counts.var() / counts.mean())
    counts60 = np.bincount((t // 60.0).astype(np.int64))
    out["peak_to_mean_60s"] = float(counts60.max() / counts60.mean())
    return out


def merge(workloads: Sequence[Workload], name: str | None = None) -> Workload:
    """Superpose streams (stable merge by arrival time)."""
    if not workloads:
        raise ValueError("merge needs at least one workload")
    check_request_count(sum(len(w) for w in workloads), "the merged streams")
    arrival = np.concatenate([w.arrival_s for w in workloads])
    order = np.argsort(arrival, kind="stable")
    horizons = [w.duration_s for w in workloads]
    return Workload(
        name or "+".join(w.name for w in workloads),
        arrival[order],
        np.concatenate([w.prompt_tokens for w in workloads])[order],
        np.concatenate([w.output_tokens for w in workloads])[order],
        max(horizons),
    )


# ---------------------------------------------------------------------------------------------------------------
# Trace readers
# ---------------------------------------------------------------------------------------------------------------

_AZURE_HEADER = ("timestamp", "contexttokens", "generatedtokens")
_PLAIN_HEADERS = (
    ("arrival_s", "prompt_tokens", "output_tokens"),
    ("arrived_at", "num_prefill_tokens", "num_decode_tokens"),
)


# K independent user populations share the slow (diurnal, tens of minutes) rate shape but not each other's
# second-to-minute bursts. Copies shifted within ±150 s keep the shape slower than ~5 min and decorrelate the
# rest; a ±30 s spread would stack K copies of every burst into one minute (a 50-prompt burst from one long
# prompt), which no real 50x population produces.
REPLICATE_SPREAD_S = 300.0


def replicate(workload: Workload, k: float, *, spread_s: float = REPLICATE_SPREAD_S, seed: int = 0) -> Workload:
    """K × the request rate over the same time span: K copies of the workload, each shifted as a whole by a
    seeded offset within ±spread_s/2 and wrapped around the workload's span .

    Used where ``--rate-scale`` must keep a trace's length and minute-scale shape (an autoscaler needs the hour to
    act in; time compression turns a 1 h trace into 3600/K s). Shifting whole copies keeps each copy's own bursts at
    their real size instead of stacking K of them at one instant, as K tenants with the same traffic shape would look.
    A fractional K adds a seeded random subset as the last copy."""
    if not (k > 0 and math.isfinite(k)):
        raise ValueError(f"rate scale must be a positive number, got {k}")
    check_request_count(k * len(workload), f"{k:g} copies of {len(workload):,} requests")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xBE7C]))
    span_s = max(workload.duration_s, float(workload.arrival_s[-1]) if len(workload) else 0.0, 1e-9)
    n_full = math.floor(k)
    # the first copy is the trace itself; the others are shifted as a whole
    offsets = [0.0] + [float(rng.uniform(-spread_s / 2, spread_s / 2)) for _ in range(n_full - 1)]
    parts = [(np.arange(len(workload)), off) for off in offsets[:n_full]]
    if k - n_full > 1e-9:
        subset = np.flatnonzero(rng.random(len(workload)) < k - n_full)
        parts.append((subset, float(rng.uniform(-spread_s / 2, spread_s / 2))))
    sel = np.concatenate([idx for idx, _ in parts])
    arrival = np.concatenate([np.mod(workload.arrival_s[idx] + off, span_s) for idx, off in parts])
    order = np.argsort(arrival, kind="stable")
    return Workload(
        f"{workload.name}x{k:g}",
        arrival[order],
        workload.prompt_tokens[sel][order],
        workload.output_tokens[sel][order],
        workload.horizon_s,
    )


def load_trace(
    path: str | Path,
    *,
    rate_scale: float = 1.0,
    window_s: tuple[float, float] | None = None,
    max_prompt_tokens: int | None = None,
    max_output_tokens: int | None = None,
) -> Workload:
    """Read a trace file (format detected) and apply window, rate scaling and caps, in that order."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraceError(f"{p}: no such trace file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{p}: cannot read: {exc}") from None
    stripped = text.lstrip()
    if not stripped:
        raise TraceError(f"{p}: empty trace file")
    if p.suffix.lower() in (".jsonl", ".ndjson") or stripped.startswith("{"):
        arrival, prompt, output = _read_mooncake(p, text)
    else:
        arrival, prompt, output = _read_csv(p, text)
    if arrival.size == 0:
        raise TraceError(f"{p}: trace has a header but no rows")
    if np.any(np.diff(arrival) < 0):
        order = np.argsort(arrival, kind="stable")
        log.warning("%s: timestamps are not sorted; %d rows stably sorted by arrival", p, arrival.size)
        arrival, prompt, output = arrival[order], prompt[order], output[order]
    arrival = arrival - arrival[0]
    w = Workload(p.stem, arrival, prompt, output)
    if window_s is not None:
        w = w.window(float(window_s[0]), float(window_s[1]))
    if rate_scale != 1.0:
        w = w.scaled(rate_scale)
    if max_prompt_tokens is not None or max_output_tokens is not None:
        w = w.capped(max_prompt_tokens, max_output_tokens)
    return w


def _read_csv(p: Path, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = list(csv.reader(text.splitlines()))
    # Skip leading blank lines but keep physical line numbers.
    first = next(i for i, r in enumerate(rows) if r)
    header = tuple(h.strip().lower() for h in rows[first])
    names = [h.strip() for h in rows[first]]
    if header == _AZURE_HEADER:
        kind = "azure"
    elif header in _PLAIN_HEADERS:
        kind = "plain"
    else:
        raise TraceError(
            f"{p}:{first + 1}: unrecognised CSV header {','.join(names)!r}; expected "
            "'TIMESTAMP,ContextTokens,GeneratedTokens' (Azure), 'arrival_s,prompt_tokens,output_tokens' "
            "or a .jsonl Mooncake trace"
        )
    body = [(i + 1, r) for i, r in enumerate(rows[first + 1 :], start=first + 1) if r]
    if not body:
        raise TraceError(f"{p}: trace has a header but no rows")
    for lineno, r in body:
        if len(r) != 3:
            raise TraceError(f"{p}:{lineno}: expected 3 fields ({','.join(names)}), got {len(r)}")
    linenos = [ln for ln, _ in body]
    cols = list(zip(*(r for _, r in body), strict=True))
    if kind == "azure":
        arrival = _parse_timestamps(p, names[0], cols[0], linenos)
    else:
        arrival = _parse_column(p, names[0], cols[0], linenos, np.float64)
        bad = ~np.isfinite(arrival)
        if bad.any():
            i = int(np.argmax(bad))
            raise TraceError(f"{p}:{linenos[i]}: field {names[0]!r}: not a finite number: {cols[0][i]!r}")
    prompt = _parse_column(p, names[1], cols[1], linenos, np.int64)
    output = _parse_column(p, names[2], cols[2], linenos, np.int64)
    _check_lengths(p, names[1], prompt, linenos)
    _check_lengths(p, names[2], output, linenos)
    return arrival, prompt, output


def _parse_timestamps(p: Path, name: str, values: Sequence[str], linenos: Sequence[int]) -> np.ndarray:
    def one(s: str) -> np.datetime64:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.datetime64(s.strip(), "ns")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stamps = np.array([s.strip() for s in values], dtype="datetime64[ns]")
    except ValueError:
        stamps = None
    if stamps is None or np.isnat(stamps).any():
        for s, ln in zip(values, linenos, strict=True):
            try:
                v = one(s)
            except ValueError:
                v = np.datetime64("NaT")
            if np.isnat(v):
                raise TraceError(f"{p}:{ln}: field {name!r}: not a timestamp: {s!r}") from None
        raise TraceError(f"{p}: field {name!r}: unparseable timestamps")  # pragma: no cover - defensive
    return np.asarray((stamps - stamps.min()).astype(np.int64), dtype=np.float64) / 1e9


def _parse_column(
    p: Path, name: str, values: Sequence[str], linenos: Sequence[int], dtype: type
) -> np.ndarray:
    try:
        return np.array([s.strip() for s in values]).astype(dtype) if values else np.zeros(0, dtype)
    except (ValueError, OverflowError):
        pass
    for s, ln in zip(values, linenos, strict=True):
        try:
            np.array([s.strip()]).astype(dtype)
        except (ValueError, OverflowError):
            what = "an integer" if dtype is np.int64 else "a number"
            if dtype is np.int64 and s.strip().isdigit():
                raise TraceError(f"{p}:{ln}: {_too_long(float(s), f'field {name!r}')}") from None
            raise TraceError(f"{p}:{ln}: field {name!r}: not {what}: {s!r}") from None
    raise TraceError(f"{p}: field {name!r}: unparseable column")  # pragma: no cover - defensive


def _check_lengths(p: Path, name: str, arr: np.ndarray, linenos: Sequence[int]) -> None:
    bad = arr < 1
    if bad.any():
        i = int(np.argmax(bad))
        raise TraceError(f"{p}:{linenos[i]}: field {name!r}: must be >= 1, got {int(arr[i])}")
    big = arr > MAX_TOKENS_PER_REQUEST
    if big.any():
        i = int(np.argmax(big))
        raise TraceError(f"{p}:{linenos[i]}: {_too_long(float(arr[i]), f'field {name!r}')}")


def _read_mooncake(p: Path, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrival: list[float] = []
    prompt: list[int] = []
    output: list[int] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{p}:{lineno}: invalid JSON: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise TraceError(f"{p}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        vals: list[float] = []
        for key in ("timestamp", "input_length", "output_length"):
            if key not in obj:
                raise TraceError(f"{p}:{lineno}: field {key!r}: missing")
            v = obj[key]
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise TraceError(f"{p}:{lineno}: field {key!r}: not a number: {v!r}")
            if key != "timestamp":
                if v != int(v):
                    raise TraceError(f"{p}:{lineno}: field {key!r}: not an integer: {v!r}")
                if v < 1:
                    raise TraceError(f"{p}:{lineno}: field {key!r}: must be >= 1, got {v!r}")
                if v > MAX_TOKENS_PER_REQUEST:
                    raise TraceError(
                        f"{p}:{lineno}: field {key!r}: {int(v)} tokens; at most {MAX_TOKENS_PER_REQUEST:,} per request"
                    )
            vals.append(v)
        arrival.append(vals[0] / 1000.0)
        prompt.append(int(vals[1]))
        output.append(int(vals[2]))
    return np.asarray(arrival, np.float64), np.asarray(prompt, np.int64), np.asarray(output, np.int64)


# ---------------------------------------------------------------------------------------------------------------
# Length distributions
# ---------------------------------------------------------------------------------------------------------------

# Quantile functions of the Azure LLM inference 2023 traces (derived from AzureLLMInferenceTrace_{conv,code}.csv;
# see performance-anchors.md §3). Probabilities and the matching token counts; sampled by linear interpolation.
_AZ_Q = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75,
         0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 1.0)
_AZ_CONV_PROMPT = (2, 29, 91, 181, 207, 372, 387, 396, 403, 414, 703, 984, 1020, 1045, 1071, 1097, 1130, 1189,
                   1315, 1876, 2734, 4076, 4083, 4090, 4098, 4142, 4831, 6179, 14050)
_AZ_CONV_OUTPUT = (7, 16, 24, 41, 54, 67, 77, 85, 91, 96, 103, 113, 129, 151, 177, 217, 384, 395, 400, 411, 424,
                   433, 451, 509, 540, 601, 643, 954, 1000)
_AZ_CODE_PROMPT = (3, 17, 35, 75, 147, 232, 386, 578, 770, 939, 1075, 1261, 1469, 1690, 1909, 2164, 2433, 2744,
                   3192, 3920, 5188, 6194, 7303, 7435, 7436, 7436, 7436, 7437, 7437)
_AZ_CODE_OUTPUT = (6, 6, 6, 6, 7, 7, 8, 9, 9, 10, 11, 12, 13, 14, 16, 18, 20, 24, 29, 39, 55, 72, 90, 128, 171, 251,
                   359, 825, 1899)

Sampler = Callable[[np.random.Generator, int], np.ndarray]


def _quantile_sampler(values: Sequence[int]) -> Sampler:
    q = np.asarray(_AZ_Q)
    v = np.asarray(values, dtype=np.float64)

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.interp(rng.random(n), q, v)

    return sample


_EMBEDDED: dict[str, tuple[Sequence[int], Sequence[int]]] = {
    "azure_conv": (_AZ_CONV_PROMPT, _AZ_CONV_OUTPUT),
    "azure_code": (_AZ_CODE_PROMPT, _AZ_CODE_OUTPUT),
}


def _lognormal(mean: float, sigma: float) -> Sampler:
    mu = math.log(mean) - sigma * sigma / 2.0
    return lambda rng, n: rng.lognormal(mu, sigma, n)


def _pareto(alpha: float, xmin: float) -> Sampler:
    return lambda rng, n: xmin * (1.0 + rng.pareto(alpha, n))


def _plmix(mean: float, sigma: float, alpha: float, xmin: float, p_tail: float) -> Sampler:
    body, tail = _lognormal(mean, sigma), _pareto(alpha, xmin)

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        is_tail = rng.random(n) < p_tail
        return np.where(is_tail, tail(rng, n), body(rng, n))

    return sample


def _make_dist(name: str, args: list[str], role: str, where: str) -> Sampler:
    """Build a sampler for ``name(args)``; ``role`` is 'prompt' or 'output' (used by empirical/embedded)."""

    def nums(count: int) -> list[float]:
        if len(args) != count:
            raise SpecError(f"{where}: {name}() takes {count} argument(s), got {len(args)}")
        out = []
        for a in args:
            try:
                out.append(float(a))
            except ValueError:
                raise SpecError(f"{where}: {name}(): {a!r} is not a number") from None
        return out

    def positive(**kw: float) -> None:
        for k, v in kw.items():
            if not (v > 0 and math.isfinite(v)):
                raise SpecError(f"{where}: {name}(): {k} must be > 0, got {v:g}")

    if name in ("const", "fixed"):
        (v,) = nums(1)
        positive(value=v)
        return lambda rng, n: np.full(n, v)
    if name == "uniform":
        lo, hi = nums(2)
        positive(lo=lo, hi=hi)
        if hi < lo:
            raise SpecError(f"{where}: uniform(): hi < lo")
        return lambda rng, n: rng.uniform(lo, hi, n)
    if name in ("exp", "exponential"):
        (m,) = nums(1)
        positive(mean=m)
        return lambda rng, n: rng.exponential(m, n)
    if name == "lognormal":
        m, s = nums(2)
        positive(mean=m, sigma=s)
        return _lognormal(m, s)
    if name == "pareto":
        a, xm = nums(2)
        positive(alpha=a, xmin=xm)
        return _pareto(a, xm)
    if name == "plmix":
        m, s, a, xm, pt = nums(5)
        positive(mean=m, sigma=s, alpha=a, xmin=xm)
        if not 0 <= pt <= 1:
            raise SpecError(f"{where}: plmix(): p_tail must be in [0, 1], got {pt:g}")
        return _plmix(m, s, a, xm, pt)
    if name in _EMBEDDED:
        nums(0)
        prompt_q, output_q = _EMBEDDED[name]
        return _quantile_sampler(prompt_q if role == "prompt" else output_q)
    if name == "empirical":
        if len(args) != 1:
            raise SpecError(f"{where}: empirical() takes one path")
        w = _load_for_spec(args[0], where)
        pool = w.prompt_tokens if role == "prompt" else w.output_tokens
        return lambda rng, n: pool[rng.integers(0, pool.size, n)].astype(np.float64)
    raise SpecError(
        f"{where}: unknown distribution {name!r}; known: const, uniform, exp, lognormal, pareto, plmix, "
        "empirical, azure_conv, azure_code"
    )


def _load_for_spec(path: str, where: str) -> Workload:
    try:
        return load_trace(path)
    except TraceError as exc:
        raise SpecError(f"{where}: {exc}") from None


# ---------------------------------------------------------------------------------------------------------------
# Arrival processes
# ---------------------------------------------------------------------------------------------------------------

RateFn = Callable[[np.ndarray], np.ndarray]


def renewal_arrivals(
    rng: np.random.Generator, rate_fn: RateFn, duration_s: float, cv: float = 1.0, grid_s: float = 0.05
) -> np.ndarray:
    """Arrival times in [0, duration_s) of a renewal process with inter-arrival CV ``cv`` driven by rate λ(t).

    A unit-rate renewal process (exponential gaps for cv=1, Gamma with shape 1/cv² otherwise) is generated in
    operational time and mapped back through the inverse cumulative rate Λ⁻¹, computed on a grid of ``grid_s``.
    """
    if not duration_s > 0:
        raise ValueError(f"duration must be > 0, got {duration_s}")
    if not cv > 0:
        raise ValueError(f"cv must be > 0, got {cv}")
    n_grid = int(min(max(duration_s / grid_s, 1000), 2_000_000)) + 1
    t = np.linspace(0.0, duration_s, n_grid)
    lam = np.asarray(rate_fn(t), dtype=np.float64)
    if np.any(lam < 0) or not np.all(np.isfinite(lam)):
        raise ValueError("rate must be finite and >= 0 everywhere")
    cum = np.concatenate([[0.0], np.cumsum((lam[1:] + lam[:-1]) * 0.5 * np.diff(t))])
    total = float(cum[-1])
    check_request_count(total, f"mean rate {total / duration_s:g}/s over {duration_s:g} s")
    if total <= 0:
        return np.zeros(0)
    shape = 1.0 / (cv * cv)
    n_guess = int(total + 6 * math.sqrt(total) * max(cv, 1.0) + 20)
    ops: list[np.ndarray] = []
    last = 0.0
    # Stationary start: the first gap of an equilibrium renewal process is drawn like the others (close enough
    # for cv near 1; bursty streams start with a full gap, which is documented behaviour).
    while last < total:
        gaps = rng.gamma(shape, 1.0 / shape, n_guess) if cv != 1.0 else rng.exponential(1.0, n_guess)
        chunk = last + np.cumsum(gaps)
        ops.append(chunk)
        last = float(chunk[-1])
    op = np.concatenate(ops)
    op = op[op < total]
    # Invert Λ: Λ is non-decreasing; interp over strictly increasing part handles flat (zero-rate) spans.
    keep = np.concatenate([[True], np.diff(cum) > 0])
    return np.asarray(np.interp(op, cum[keep], t[keep]), dtype=np.float64)


def _rate_fn(kind: str, p: dict[str, float], where: str) -> RateFn:
    def need(*keys: str) -> list[float]:
        missing = [k for k in keys if k not in p]
        if missing:
            raise SpecError(f"{where}: {kind} needs {', '.join(missing)}")
        return [p[k] for k in keys]

    def nonneg(**kw: float) -> None:
        for k, v in kw.items():
            if v < 0 or not math.isfinite(v):
                raise SpecError(f"{where}: {k} must be a finite number >= 0, got {v:g}")

    if kind in ("poisson", "gamma"):
        (rate,) = need("rate")
        nonneg(rate=rate)
        return lambda t: np.full_like(t, rate)
    if kind in ("sine", "diurnal"):
        rate, amp, period = need("rate", "amplitude", "period")
        phase = p.get("phase", 0.0)
        nonneg(rate=rate)
        if not 0 <= amp <= 1:
            raise SpecError(f"{where}: amplitude must be in [0, 1], got {amp:g}")
        if not period > 0:
            raise SpecError(f"{where}: period must be > 0")
        return lambda t: rate * (1.0 + amp * np.sin(2 * np.pi * (t - phase) / period))
    if kind == "step":
        rate, to, at = need("rate", "to", "at")
        nonneg(rate=rate, to=to)
        return lambda t: np.where(t < at, rate, to)
    if kind == "spike":
        rate, peak, at, width = need("rate", "peak", "at", "width")
        nonneg(rate=rate, peak=peak, width=width)
        return lambda t: np.where((t >= at) & (t < at + width), peak, rate)
    if kind == "ramp":
        rate, to, at, width = need("rate", "to", "at", "width")
        nonneg(rate=rate, to=to)
        if not width > 0:
            raise SpecError(f"{where}: width must be > 0")
        return lambda t: rate + (to - rate) * np.clip((t - at) / width, 0.0, 1.0)
    raise SpecError(f"{where}: unknown arrival kind {kind!r}")


_KINDS = ("poisson", "gamma", "sine", "diurnal", "step", "spike", "ramp", "piecewise", "trace")
_NUMERIC_KEYS = {"rate", "duration", "start", "cv", "amplitude", "period", "phase", "to", "at", "width", "peak",
                 "every", "rate_scale", "window_start", "window_end", "max_prompt", "max_output"}
_TEXT_KEYS = {"rates", "path", "name", "prompt", "output", "lengths"}


def _split_top(s: str, sep: str) -> list[str]:
    """Split on ``sep`` outside parentheses."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SpecError(f"unbalanced ')' in {s!r}")
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise SpecError(f"unbalanced '(' in {s!r}")
    parts.append("".join(cur))
    return parts


_DIST_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*$", re.S)


def _parse_dist(text: str, role: str, where: str) -> Sampler:
    m = _DIST_RE.match(text)
    if not m:
        raise SpecError(f"{where}: expected a distribution like lognormal(1000,1.0), got {text!r}")
    args = [a.strip() for a in _split_top(m.group(2), ",")] if m.group(2).strip() else []
    return _make_dist(m.group(1), args, role, where)


def _generate_stream(text: str, rng: np.random.Generator, index: int) -> Workload:
    where = f"stream {index + 1} ({text.strip()!r})"
    if ":" not in text:
        raise SpecError(f"{where}: expected KIND:key=value,...; kinds: {', '.join(_KINDS)}")
    kind, _, rest = text.partition(":")
    kind = kind.strip().lower()
    if kind == CLOSED_KIND:
        raise SpecError(
            f"{where}: a closed-loop stream ({CLOSED_KIND}:users=N,...) has no arrival times of its own: each "
            "request leaves when an earlier one finishes, so it cannot be superposed with open-loop streams or "
            "turned into an open-loop workload; give it alone as the workload (pdscale sim run --generator "
            f"'{CLOSED_KIND}:users=N,duration=S', a scenario's workload.generator) or use "
            "sim.closed_loop.run_closed_loop"
        )
    if kind not in _KINDS:
        raise SpecError(f"{where}: unknown arrival kind {kind!r}; kinds: {', '.join((*_KINDS, CLOSED_KIND))}")
    nums, texts = _parse_params(rest, where, _NUMERIC_KEYS, _TEXT_KEYS)
    if kind == "trace":
        if "path" not in texts:
            raise SpecError(f"{where}: trace needs path=FILE")
        window = None
        if "window_start" in nums or "window_end" in nums:
            window = (nums.get("window_start", 0.0), nums.get("window_end", math.inf))
        try:
            w = load_trace(
                texts["path"],
                rate_scale=nums.get("rate_scale", 1.0),
                window_s=window,
            )
        except (TraceError, ValueError) as exc:
            raise SpecError(f"{where}: {exc}") from None
        arrival, prompt, output = w.arrival_s, w.prompt_tokens, w.output_tokens
        horizon = w.duration_s
        if "duration" in nums:
            keep = arrival < nums["duration"]
            arrival, prompt, output = arrival[keep], prompt[keep], output[keep]
            horizon = nums["duration"]
    else:
        if "duration" not in nums:
            raise SpecError(f"{where}: duration=SECONDS is required")
        duration = nums["duration"]
        if not duration > 0:
            raise SpecError(f"{where}: duration must be > 0")
        cv = nums.get("cv", 1.0)
        if kind == "gamma" and "cv" not in nums:
            raise SpecError(f"{where}: gamma needs cv")
        if not cv > 0:
            raise SpecError(f"{where}: cv must be > 0")
        if kind == "piecewise":
            if "rates" not in texts or "every" not in nums:
                raise SpecError(f"{where}: piecewise needs rates=r1/r2/... and every=SECONDS")
            try:
                rates = np.array([float(x) for x in texts["rates"].split("/")])
            except ValueError:
                raise SpecError(f"{where}: rates={texts['rates']!r} must be numbers separated by '/'") from None
            if np.any(rates < 0):
                raise SpecError(f"{where}: rates must be >= 0")
            every = nums["every"]
            if not every > 0:
                raise SpecError(f"{where}: every must be > 0")

            def piecewise(t: np.ndarray) -> np.ndarray:
                return np.asarray(rates[np.minimum((t // every).astype(np.int64), rates.size - 1)])

            rate_fn: RateFn = piecewise
        else:
            rate_fn = _rate_fn(kind, nums, where)
        arrival = renewal_arrivals(rng, rate_fn, duration, cv)
        horizon = duration
        prompt, output = _sample_lengths(texts, rng, arrival.size, where)
    start = nums.get("start", 0.0)
    w = Workload(texts.get("name", kind), arrival + start, prompt, output, horizon + start)
    if "max_prompt" in nums or "max_output" in nums:
        mp, mo = nums.get("max_prompt"), nums.get("max_output")
        w = w.capped(None if mp is None else int(mp), None if mo is None else int(mo))
    return w


def _sample_lengths(
    texts: dict[str, str], rng: np.random.Generator, n: int, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (prompt, output) pairs from ``lengths=empirical(PATH)`` (joint) or ``prompt=``/``output=`` DISTs."""
    if "lengths" in texts:
        if "prompt" in texts or "output" in texts:
            raise SpecError(f"{where}: give either lengths= or prompt=/output=, not both")
        m = _DIST_RE.match(texts["lengths"])
        if not m or m.group(1) != "empirical":
            raise SpecError(f"{where}: lengths= takes empirical(PATH)")
        src = _load_for_spec(m.group(2).strip(), where)
        idx = rng.integers(0, len(src), n)
        return src.prompt_tokens[idx], src.output_tokens[idx]
    prompt_s = _parse_dist(texts.get("prompt", "azure_conv()"), "prompt", f"{where} prompt")
    output_s = _parse_dist(texts.get("output", "azure_conv()"), "output", f"{where} output")
    return _token_counts(prompt_s(rng, n), f"{where} prompt"), _token_counts(output_s(rng, n), f"{where} output")


def _parse_params(
    rest: str, where: str, numeric_keys: set[str], text_keys: set[str]
) -> tuple[dict[str, float], dict[str, str]]:
    """``key=value,...`` -> (numbers, texts); unknown or repeated keys and non-numbers are errors."""
    nums: dict[str, float] = {}
    texts: dict[str, str] = {}
    for item in _split_top(rest, ","):
        if not item.strip():
            raise SpecError(f"{where}: empty parameter")
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not value:
            raise SpecError(f"{where}: parameter {item.strip()!r} is not key=value")
        if key in nums or key in texts:
            raise SpecError(f"{where}: parameter {key!r} given twice")
        if key in numeric_keys:
            try:
                nums[key] = float(value)
            except ValueError:
                raise SpecError(f"{where}: {key}={value!r} is not a number") from None
        elif key in text_keys:
            texts[key] = value
        else:
            raise SpecError(f"{where}: unknown parameter {key!r}")
    return nums, texts


# ---------------------------------------------------------------------------------------------------------------
# Closed-loop workloads
# ---------------------------------------------------------------------------------------------------------------

CLOSED_KIND = "closed"
_CLOSED_NUMERIC_KEYS = {"users", "requests", "duration", "think_s", "max_prompt", "max_output"}
CLOSED_LOOP_BLOCK = 1024  # a duration-bound loop's lengths are drawn this many requests at a time
LengthBlock = Callable[[int], tuple[np.ndarray, np.ndarray]]
_CLOSED_TEXT_KEYS = {"prompt", "output", "lengths", "name"}


@dataclass(frozen=True)
class ClosedLoopSpec:
    """N users, each sending its next request when its previous one has finished (plus ``think_s``).

    Semantics of ``vllm bench serve --max-concurrency N --num-prompts M`` (a semaphore of N over one list of
    prompts): the first ``users`` requests leave at t = 0; every client-side completion frees a slot, and the next
    request of the list leaves ``think_s`` later. Request j (0-based, in list order) has ``prompt_tokens[j]`` and
    ``output_tokens[j]``; the lengths are drawn once, from the seed, so they do not depend on the timing.

    Bounded by ``requests=M`` (the list), by ``duration=S`` (no client sends after S seconds), or by both (whichever
    comes first). With a duration and no request count the list has no fixed length: ``prompt_tokens`` holds its
    first ``CLOSED_LOOP_BLOCK`` requests and ``more_lengths(b)`` draws the b-th further block (seeded per block).

    Grammar: ``closed:users=N,requests=M|duration=S[,think_s=S][,prompt=DIST,output=DIST |
    lengths=empirical(PATH)][,max_prompt=K,max_output=K][,name=NAME]`` (DIST as for the open-loop kinds; default
    azure_conv()).
    """

    name: str
    users: int
    think_s: float
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    duration_s: float | None = None
    more_lengths: LengthBlock | None = None

    def __post_init__(self) -> None:
        if self.users < 1:
            raise SpecError(f"closed-loop workload {self.name!r}: users must be >= 1, got {self.users}")
        if not (math.isfinite(self.think_s) and self.think_s >= 0):
            raise SpecError(f"closed-loop workload {self.name!r}: think_s must be >= 0, got {self.think_s}")
        if self.duration_s is not None and not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise SpecError(f"closed-loop workload {self.name!r}: duration must be > 0, got {self.duration_s}")
        if self.more_lengths is not None and self.duration_s is None:
            raise SpecError(f"closed-loop workload {self.name!r}: an unbounded list needs a duration")
        n = np.asarray(self.prompt_tokens).size
        if n < 1 or np.asarray(self.output_tokens).size != n:
            raise SpecError(f"closed-loop workload {self.name!r}: needs >= 1 request and one output per prompt")

    def workload(self) -> Workload:
        """The listed requests as a ``Workload`` (all sent at 0 as far as the type goes; the loop sets the times)."""
        n = self.requests
        return Workload(self.name, np.zeros(n), self.prompt_tokens, self.output_tokens, self.duration_s)

    @property
    def requests(self) -> int:
        return int(np.asarray(self.prompt_tokens).size)

    def arrivals_from_completions(self, completion_s: np.ndarray) -> np.ndarray:
        """Send times given every request's client-side completion time (request order): the first ``users``
        leave at 0, request j >= users leaves at the (j − users)-th earliest completion + ``think_s``."""
        n = self.requests
        out = np.zeros(n, dtype=np.float64)
        if n > self.users:
            done = np.sort(np.asarray(completion_s, dtype=np.float64))
            out[self.users :] = done[: n - self.users] + self.think_s
        return out


def is_closed_loop(spec: str) -> bool:
    """True when ``spec`` is a (single-stream) closed-loop generator spec."""
    return spec.strip().lower().startswith(CLOSED_KIND + ":")


def parse_closed_loop(spec: str, *, seed: int) -> ClosedLoopSpec:
    """Parse ``closed:users=N,requests=M,...`` (see :class:`ClosedLoopSpec`); same seed, same lengths."""
    text = spec.strip()
    where = f"closed-loop spec ({text!r})"
    if len(_split_top(text, "+")) != 1:
        raise SpecError(f"{where}: a closed-loop spec is one stream; superpose open-loop streams instead")
    kind, _, rest = text.partition(":")
    if kind.strip().lower() != CLOSED_KIND:
        raise SpecError(f"{where}: expected {CLOSED_KIND}:users=N,requests=M,...")
    nums, texts = _parse_params(rest, where, _CLOSED_NUMERIC_KEYS, _CLOSED_TEXT_KEYS)
    if "users" not in nums:
        raise SpecError(f"{where}: users= is required")
    if "requests" not in nums and "duration" not in nums:
        raise SpecError(f"{where}: give requests=M (how many requests), duration=S (how long the users send), or both")
    for key in ("users", "requests"):
        if key in nums and (nums[key] != int(nums[key]) or nums[key] < 1):
            raise SpecError(f"{where}: {key} must be an integer >= 1, got {nums[key]:g}")
    duration = nums.get("duration")
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise SpecError(f"{where}: duration must be a positive number of seconds, got {duration:g}")
    think = nums.get("think_s", 0.0)
    if not (math.isfinite(think) and think >= 0):
        raise SpecError(f"{where}: think_s must be >= 0")
    caps = {}
    for key in ("max_prompt", "max_output"):
        if key in nums:
            if not nums[key] >= 1:
                raise SpecError(f"{where}: {key} must be >= 1")
            caps[key] = int(nums[key])

    def lengths(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        prompt, output = _sample_lengths(texts, rng, n, where)
        if "max_prompt" in caps:
            prompt = np.minimum(prompt, caps["max_prompt"])
        if "max_output" in caps:
            output = np.minimum(output, caps["max_output"])
        return prompt, output

    name = texts.get("name", CLOSED_KIND)
    users = int(nums["users"])
    if "requests" in nums:  # one draw of the whole list: same seed, same lengths, whatever the timing
        prompt, output = lengths(np.random.default_rng(np.random.SeedSequence([seed, 0xC105ED])), int(nums["requests"]))
        return ClosedLoopSpec(name, users, think, prompt, output, duration)

    def block(index: int) -> tuple[np.ndarray, np.ndarray]:
        return lengths(np.random.default_rng(np.random.SeedSequence([seed, 0xC105ED, index])), CLOSED_LOOP_BLOCK)

    prompt, output = block(0)
    return ClosedLoopSpec(name, users, think, prompt, output, duration, lambda b: block(b + 1))
def _token_counts(samples: np.ndarray, where: str) -> np.ndarray:
    """Sampled lengths as whole tokens >= 1; a sample beyond ``MAX_TOKENS_PER_REQUEST`` (or not finite) is refused
    before the integer cast could wrap it around."""
    bad = ~(samples <= MAX_TOKENS_PER_REQUEST)
    if bad.any():
        raise SpecError(f"{where} length {_too_long(float(samples[int(np.argmax(bad))]), 'sampled')}")
    return np.asarray(np.maximum(np.rint(samples), 1).astype(np.int64))


def generate(spec: str, *, seed: int) -> Workload:
    """Build a workload from a spec string (grammar in the module docstring); same seed, same workload."""
    if not spec or not spec.strip():
        raise SpecError("empty workload spec")
    streams = _split_top(spec, "+")
    children = np.random.SeedSequence(seed).spawn(len(streams))
    parts = [
        _generate_stream(s, np.random.default_rng(c), i)
        for i, (s, c) in enumerate(zip(streams, children, strict=True))
    ]
    if len(parts) == 1:
        return parts[0]
    return merge(parts, name=spec.strip())


# ---------------------------------------------------------------------------------------------------------------
# Built-in workloads
# ---------------------------------------------------------------------------------------------------------------


def default_workload(seed: int = 0, duration_s: float = 1800.0) -> Workload:
    """Azure-conversation-like traffic, embedded (no files).

    Mean rate 5.5 req/s modulated over minutes: the log-rate is an AR(1) process sampled every 60 s (std 0.24,
    lag-1 correlation 0.8), normalised to mean 1 and interpolated linearly in between, which reproduces the trace's over-dispersion
    (variance-to-mean ratio of 60 s counts ≈ 20, 1-minute peak/mean ≈ 1.5; performance-anchors.md §4). Lengths
    are drawn independently from the embedded Azure conv quantile functions (prompt mean ≈ 1155, output ≈ 211).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA2C0]))
    mean_rate, sd, rho, knot_s = 5.53, 0.24, 0.8, 60.0
    n_knots = math.ceil(duration_s / knot_s) + 2
    z = np.empty(n_knots)
    z[0] = rng.normal(0.0, sd)
    innov = rng.normal(0.0, sd * math.sqrt(1 - rho * rho), n_knots)
    for i in range(1, n_knots):
        z[i] = rho * z[i - 1] + innov[i]
    knots_t = np.arange(n_knots) * knot_s
    knots_rate = mean_rate * np.exp(z) / np.exp(z).mean()  # the mean rate is exact for every seed

    def rate_fn(t: np.ndarray) -> np.ndarray:
        return np.asarray(np.interp(t, knots_t, knots_rate), dtype=np.float64)

    arrival = renewal_arrivals(rng, rate_fn, duration_s)
    prompt = np.maximum(np.rint(_quantile_sampler(_AZ_CONV_PROMPT)(rng, arrival.size)), 1).astype(np.int64)
    output = np.maximum(np.rint(_quantile_sampler(_AZ_CONV_OUTPUT)(rng, arrival.size)), 1).astype(np.int64)
    return Workload("default-azure-conv", arrival, prompt, output, duration_s)


# Demo phases (seconds): a baseline all along, a prompt-heavy surge and later a generation-heavy surge, each
# ramping up over 60 s, holding 240 s and ramping down over 60 s.
DEMO_DURATION_S = 1500.0
DEMO_PROMPT_SURGE_S = (300.0, 660.0)
DEMO_DECODE_SURGE_S = (900.0, 1260.0)


def demo_workload(seed: int = 0) -> Workload:
    """A 25-minute demo sized for Llama-3.1-8B on H100 (TP1; ~42k prefill tok/s per replica).

    * baseline 25 req/s, prompts lognormal(mean 3000, σ 0.8), outputs exponential(mean 300):
      ≈ 75k prompt tok/s and 7.5k output tok/s, about 2–3 replicas in each pool;
    * prompt-heavy surge (300–660 s): +25 req/s with prompts lognormal(8000, 0.5) and outputs exp(30):
      ≈ +200k prompt tok/s, needing ~6–8 prefill replicas in total;
    * generation-heavy surge (900–1260 s): +30 req/s with prompts lognormal(300, 0.5) and outputs
      lognormal(1600, 0.4): ≈ +48k output tok/s, needing ~6–8 decode replicas in total (36 req/s before the
      profile's decode step was calibrated on vLLM's measured step times, which made decode ~30 % slower).
    Sizing by sim.analytic (M/M/c on prefill times for TTFT p99 <= 1 s; decode Little's-law fixed point with
    mean ITL <= 30 ms and KV <= 90%): prefill 3 / 8 / 3 and decode 3 / 3 / 8 replicas for baseline / prompt
    surge / generation surge (tests/unit/test_workload.py checks these bands).
    Prompts are capped at 16k tokens and outputs at 4k.
    """
    spec = (
        f"poisson:name=baseline,rate=25,duration={DEMO_DURATION_S:g},"
        "prompt=lognormal(3000,0.8),output=exp(300),max_prompt=16384,max_output=4096"
    )
    surges = []
    for (start, end), peak, lengths in (
        (DEMO_PROMPT_SURGE_S, 25.0, "prompt=lognormal(8000,0.5),output=exp(30)"),
        (DEMO_DECODE_SURGE_S, 30.0, "prompt=lognormal(300,0.5),output=lognormal(1600,0.4)"),
    ):
        span = end - start
        surges.append(
            f"piecewise:rates={_ramp_profile(peak, span)},every=10,"
            f"duration={span:g},start={start:g},{lengths},max_prompt=16384,max_output=4096"
        )
    w = generate(" + ".join([spec, *surges]), seed=seed)
    return Workload("demo-pd-surges", w.arrival_s, w.prompt_tokens, w.output_tokens, DEMO_DURATION_S)


def _ramp_profile(peak: float, span_s: float, ramp_s: float = 60.0, every_s: float = 10.0) -> str:
    n = int(span_s // every_s)
    mids = (np.arange(n) + 0.5) * every_s
    rates = peak * np.clip(np.minimum(mids / ramp_s, (span_s - mids) / ramp_s), 0.0, 1.0)
    return "/".join(f"{r:.3g}" for r in rates)
