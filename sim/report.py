"""Write a replay's results to a folder: requests.csv, windows.csv, decisions.csv, summary.json and PNG plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from sim.replay import SimResult

REQUEST_COLUMNS = (
    "arrival_s", "prompt_tokens", "output_tokens", "prefill_start_s", "prefill_end_s", "kv_ready_s",
    "first_token_s", "last_token_s", "itl_mean_s", "itl_max_s", "prefill_pod", "decode_pod", "preemptions",
    "finished",
)  # fmt: skip


def write_report(result: SimResult, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """Write every artefact into ``out_dir`` (created if needed); returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [
        _write_requests(result.records, out / "requests.csv"),
        _write_table(result.windows, out / "windows.csv"),
        _write_decisions(result, out / "decisions.csv"),
    ]
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(result.summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    written.append(summary_path)
    if plots:
        written += write_plots(result, out)
    return written


def _cell(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return "" if math.isnan(value) else repr(float(value))
    if isinstance(value, np.bool_ | bool):
        return int(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _write_requests(records: Any, path: Path) -> Path:
    columns = [c for c in REQUEST_COLUMNS if hasattr(records, c)]
    arrays = [np.asarray(getattr(records, c)) for c in columns]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["request", *columns])
        for i in range(len(arrays[0]) if arrays else 0):
            writer.writerow([i, *(_cell(a[i]) for a in arrays)])
    return path


def _write_table(table: dict[str, np.ndarray], path: Path) -> Path:
    columns = list(table)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        n = len(table[columns[0]]) if columns else 0
        for i in range(n):
            writer.writerow([_cell(table[c][i]) for c in columns])
    return path


def _write_decisions(result: SimResult, path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["time_s", "pool", "current", "desired", "reason", "message"])
        for t, decision in result.decisions:
            for pd in (decision.prefill, decision.decode):
                writer.writerow(
                    [t, pd.pool.value, pd.current_replicas, pd.desired_replicas, pd.reason, pd.message]
                )
    return path


def write_plots(result: SimResult, out: Path) -> list[Path]:
    """Load, replicas by pool and state, and TTFT/ITL p99 against target, over time (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = result.windows
    minutes = w["start_s"] / 60.0
    paths: list[Path] = []

    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(minutes, w["arrival_rate_per_s"], label="arrivals (req/s)")
    ax.set_xlabel("time (min)")
    ax.set_ylabel("requests/s")
    ax2 = ax.twinx()
    ax2.plot(minutes, w["prompt_tokens_per_s"] / 1000, color="tab:orange", label="prompt ktok/s", alpha=0.7)
    ax2.plot(minutes, w["output_tokens_per_s"] / 1000, color="tab:green", label="output ktok/s", alpha=0.7)
    ax2.set_ylabel("ktokens/s")
    fig.legend(loc="upper right")
    ax.set_title("load")
    paths.append(_save(fig, out / "load.png"))

    t = result.timeline.get("time_s", np.array([])) / 60.0
    fig, axes = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    for ax, pool in zip(axes, ("prefill", "decode"), strict=True):
        if t.size:
            ax.step(t, result.timeline[f"{pool}_desired"], where="post", label="desired", color="black")
            ax.stackplot(
                t,
                result.timeline[f"{pool}_ready"],  # ready excludes draining pods (Engine.replicas)
                result.timeline[f"{pool}_starting"],
                result.timeline[f"{pool}_draining"],
                labels=["ready", "starting", "draining"],
                colors=["tab:blue", "tab:orange", "tab:gray"],
                alpha=0.6,
                step="post",
            )
        ax.set_ylabel(f"{pool} replicas")
        ax.legend(loc="upper left", fontsize="small")
    axes[-1].set_xlabel("time (min)")
    axes[0].set_title(f"replicas ({result.summary.get('policy', '')})")
    paths.append(_save(fig, out / "replicas.png"))

    fig, axes = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    for ax, key, target_key, label in (
        (axes[0], "ttft", "ttft_target_s", "TTFT"),
        (axes[1], "itl", "itl_target_s", "ITL (per-request mean)"),
    ):
        p99 = np.where(np.isfinite(w[f"{key}_p99_s"]), w[f"{key}_p99_s"], np.nan)
        ax.plot(minutes, p99, marker=".", label=f"{label} p99")
        ax.plot(minutes, w[f"{key}_p50_s"], marker=".", alpha=0.6, label=f"{label} p50")
        ax.axhline(result.summary[target_key], color="red", linestyle="--", label="target")
        late = ~np.isfinite(w[f"{key}_p99_s"]) & w["counted"]
        if late.any():
            ax.plot(
                minutes[late],
                np.full(int(late.sum()), result.summary[target_key]),
                "rx",
                label="no completion",
            )
        ax.set_yscale("log")
        ax.set_ylabel("seconds")
        ax.legend(loc="upper left", fontsize="small")
    axes[-1].set_xlabel("time (min)")
    axes[0].set_title("latency per window vs target")
    paths.append(_save(fig, out / "latency.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
