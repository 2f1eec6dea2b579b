"""Per-request records of a load run and the summary ``vllm bench serve`` prints (reference/vllm-metrics.md §8).

Definitions (all client-side, as vLLM's bench computes them): TTFT = send -> first token event; ITL = every gap
between successive token events, pooled over requests; TPOT = (e2e - TTFT) / (output tokens - 1) per request with
more than one output token, output tokens from ``usage.completion_tokens``; E2EL = send -> last event. Request
throughput = completed requests / run duration (first send -> last completion). Goodput (DistServe): completed
requests meeting every given SLO (``ttft``, ``tpot``, ``e2el`` in ms) per second. Durations are in model seconds:
with ``--time-scale K`` every measured duration was divided by K before it got here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

GOODPUT_METRICS = ("ttft", "tpot", "e2el")
LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")


@dataclass
class RequestRecord:
    """One request as the load generator saw it. Times in model seconds from the run's start."""

    index: int
    scheduled_s: float  # when the workload said it should leave
    sent_s: float  # when it left
    prompt_tokens: int  # what was sent
    max_tokens: int
    ok: bool = False
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    output_tokens: int = 0  # usage.completion_tokens, else token events counted
    usage_prompt_tokens: int | None = None
    error: str | None = None
    status: int | None = None

    @property
    def tpot_s(self) -> float | None:
        if not self.ok or self.ttft_s is None or self.e2e_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)

    @property
    def done_s(self) -> float | None:
        return None if self.e2e_s is None else self.sent_s + self.e2e_s


def parse_goodput(items: Sequence[str] | None) -> dict[str, float]:
    """``["ttft:500", "tpot:50"]`` (milliseconds, vllm bench's --goodput syntax) -> ``{"ttft": 0.5, ...}`` seconds."""
    out: dict[str, float] = {}
    for item in items or ():
        for part in item.replace(",", " ").split():
            name, sep, value = part.partition(":")
            if not sep or name not in GOODPUT_METRICS:
                raise ValueError(
                    f"--goodput: expected METRIC:MS with METRIC in {', '.join(GOODPUT_METRICS)}, got {part!r}"
                )
            try:
                ms = float(value)
            except ValueError:
                raise ValueError(f"--goodput: {part!r}: {value!r} is not a number of milliseconds") from None
            if not (math.isfinite(ms) and ms > 0):
                raise ValueError(f"--goodput: {part!r}: the SLO must be a positive number of milliseconds")
            out[name] = ms / 1000.0
    return out


def _stats(values: Sequence[float], percentiles: Sequence[float]) -> dict[str, float | None]:
    """mean/median/std/pXX in milliseconds (None when there is no sample)."""
    if not values:
        return {"mean_ms": None, "median_ms": None, "std_ms": None,
                **{f"p{p:g}_ms": None for p in percentiles}}  # fmt: skip
    arr = np.asarray(values, dtype=np.float64) * 1000.0
    out: dict[str, float | None] = {
        "mean_ms": float(arr.mean()),
        "median_ms": float(np.median(arr)),
        "std_ms": float(arr.std()),
    }
    for p in percentiles:
        out[f"p{p:g}_ms"] = float(np.percentile(arr, p))
    return out


def summarize(
    records: Sequence[RequestRecord],
    *,
    percentiles: Sequence[float] = (50.0, 90.0, 99.0),
    goodput_slo_s: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The ``vllm bench serve`` summary of a run (plus p50/p90 of every latency metric)."""
    done = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    starts = [r.sent_s for r in records]
    ends = [r.done_s for r in records if r.done_s is not None]
    duration = (max(ends) - min(starts)) if ends and starts else 0.0
    out_tokens = sum(r.output_tokens for r in done)
    in_tokens = sum(
        r.usage_prompt_tokens if r.usage_prompt_tokens is not None else r.prompt_tokens for r in done
    )
    per_s = (lambda n: n / duration) if duration > 0 else (lambda n: 0.0)
    ttft = [r.ttft_s for r in done if r.ttft_s is not None]
    tpot = [t for r in done if (t := r.tpot_s) is not None]
    itl = [x for r in done for x in r.itl_s]
    e2el = [r.e2e_s for r in done if r.e2e_s is not None]
    summary: dict[str, Any] = {
        "completed": len(done),
        "failed": len(failed),
        "duration_s": duration,
        "total_input_tokens": in_tokens,
        "total_output_tokens": out_tokens,
        "request_throughput_per_s": per_s(len(done)),
        "output_throughput_tokens_per_s": per_s(out_tokens),
        "total_token_throughput_tokens_per_s": per_s(out_tokens + in_tokens),
        "ttft": _stats(ttft, percentiles),
        "tpot": _stats(tpot, percentiles),
        "itl": _stats(itl, percentiles),
        "e2el": _stats(e2el, percentiles),
        "errors": _error_counts(failed),
    }
    if goodput_slo_s:
        good = 0
        for r in done:
            values = {"ttft": r.ttft_s, "tpot": r.tpot_s, "e2el": r.e2e_s}
            if all(values[k] is not None and values[k] <= slo for k, slo in goodput_slo_s.items()):  # type: ignore[operator]
                good += 1
            elif (
                "tpot" in goodput_slo_s
                and values["tpot"] is None
                and all(
                    values[k] is not None and values[k] <= slo  # type: ignore[operator]
                    for k, slo in goodput_slo_s.items()
                    if k != "tpot"
                )
            ):
                good += 1  # a one-token answer has no TPOT to miss (vllm bench counts it good)
        summary["goodput"] = {
            "slo_ms": {k: v * 1000.0 for k, v in goodput_slo_s.items()},
            "good_requests": good,
            "request_goodput_per_s": per_s(good),
        }
    return summary


def _error_counts(failed: Iterable[RequestRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in failed:
        key = f"HTTP {r.status}" if r.status else (r.error or "error").split(":")[0][:60]
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def write_records(records: Iterable[RequestRecord], path: Path) -> None:
    """One JSON object per request (JSON Lines), in request order."""
    with path.open("w", encoding="utf-8") as f:
        for r in sorted(records, key=lambda r: r.index):
            row = asdict(r)
            row["tpot_s"] = r.tpot_s
            f.write(json.dumps(row, separators=(",", ":")) + "\n")


def print_summary(summary: Mapping[str, Any], *, title: str, file: TextIO | None = None) -> None:
    """A rich table in ``vllm bench serve``'s order."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file, highlight=False)
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")

    def row(name: str, value: Any, fmt: str = "{:.2f}") -> None:
        table.add_row(
            name, "-" if value is None else fmt.format(value) if not isinstance(value, str) else value
        )

    row("Successful requests", summary["completed"], "{:d}")
    row("Failed requests", summary["failed"], "{:d}")
    row("Benchmark duration (s)", summary["duration_s"])
    row("Total input tokens", summary["total_input_tokens"], "{:d}")
    row("Total generated tokens", summary["total_output_tokens"], "{:d}")
    row("Request throughput (req/s)", summary["request_throughput_per_s"])
    if "goodput" in summary:
        row("Request goodput (req/s)", summary["goodput"]["request_goodput_per_s"])
    row("Output token throughput (tok/s)", summary["output_throughput_tokens_per_s"])
    row("Total token throughput (tok/s)", summary["total_token_throughput_tokens_per_s"])
    labels = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2el": "E2EL"}
    for metric in LATENCY_METRICS:
        stats = summary[metric]
        table.add_section()
        for key, value in stats.items():
            name = key.removesuffix("_ms")
            name = {"mean": "Mean", "median": "Median", "std": "Std"}.get(name, name.upper())
            row(f"{name} {labels[metric]} (ms)", value)
    if summary.get("errors"):
        table.add_section()
        for err, n in summary["errors"].items():
            row(f"errors: {err}", n, "{:d}")
    console.print(table)
