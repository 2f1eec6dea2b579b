"""Measure a Llama-shaped model's prefill and decode step times with torch, fit a latency profile, write it.

The model is built from its shape alone (a HF ``config.json`` or a built-in entry of ``MODELS``) with random
weights: nothing is downloaded. Prefill steps are timed over a grid of new-token counts, decode steps over a grid
of (batch, context per sequence); the profile's coefficients are least-squares fits (non-negative) of

    prefill = a + b·T + c·T²          decode = a + b·Σctx + c·B

and the residuals are reported. The result is a ``type: poly`` profile YAML (the format ``autoscaler.profiles``
loads) whose ``source`` names the machine, torch version, date, device, dtype and grid.

Timing: on CUDA each step is bracketed by CUDA events after a warm-up and ``torch.cuda.synchronize()``; on CPU by
``time.perf_counter_ns``. The median of ``repeats`` runs is kept. ``layers_timed`` builds fewer decoder layers
than the model has (for models that do not fit the device) and scales the layers' time up linearly; the LM head
is timed once.

``--engine vllm`` times vLLM itself (``vllm.LLM`` with a local model directory) instead of the torch model: a
prefill point is one request of T prompt tokens generating one token, a decode point is the mean step of B
requests generating ``decode_steps`` tokens at context ``ctx``.
"""

from __future__ import annotations

import datetime
import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ProfilerError(ValueError):
    """Bad input for the profiler (config, grid, device); the message says which."""


@dataclass(frozen=True)
class ModelShape:
    """The shape numbers of a Llama-style decoder (what a HF config.json holds)."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    head_dim: int = 0  # 0: hidden_size // num_heads

    def __post_init__(self) -> None:
        for key in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "vocab_size"):
            if not getattr(self, key) >= 1:
                raise ProfilerError(f"model {self.name!r}: {key} must be >= 1")
        if self.num_heads % self.num_kv_heads:
            raise ProfilerError(f"model {self.name!r}: num_heads must be a multiple of num_kv_heads")
        if self.head_dim == 0 and self.hidden_size % self.num_heads:
            raise ProfilerError(f"model {self.name!r}: hidden_size must be a multiple of num_heads")

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def params(self) -> float:
        d, h, kv, hd = self.hidden_size, self.num_heads, self.num_kv_heads, self.dim_per_head
        attn = d * h * hd + 2 * d * kv * hd + h * hd * d
        mlp = 3 * d * self.intermediate_size
        return float(self.num_layers * (attn + mlp + 2 * d) + 2 * self.vocab_size * d + d)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.dim_per_head * dtype_bytes


MODELS: dict[str, ModelShape] = {
    "llama-3.1-8b": ModelShape("meta-llama/Llama-3.1-8B-Instruct", 4096, 14336, 32, 32, 8, 128256),
    "llama-3.3-70b": ModelShape("meta-llama/Llama-3.3-70B-Instruct", 8192, 28672, 80, 64, 8, 128256),
    "llama-3.2-1b": ModelShape("meta-llama/Llama-3.2-1B-Instruct", 2048, 8192, 16, 32, 8, 128256, 64),
    "tiny": ModelShape("pdscale/tiny-llama", 64, 128, 2, 4, 2, 256),
}


def shape_from_config(path: Path) -> ModelShape:
    """A ``ModelShape`` from a HF ``config.json`` (Llama, Mistral, Qwen2 and other Llama-shaped decoders)."""
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfilerError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ProfilerError(f"{path}: not JSON: {exc}") from None
    if not isinstance(cfg, dict):
        raise ProfilerError(f"{path}: expected a JSON object")
    required = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    missing = [k for k in required if not isinstance(cfg.get(k), int)]
    if missing:
        raise ProfilerError(f"{path}: missing or non-integer field(s) {', '.join(missing)}")
    return ModelShape(
        name=str(cfg.get("_name_or_path") or cfg.get("model_type") or path.parent.name),
        hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
        num_layers=cfg["num_hidden_layers"], num_heads=cfg["num_attention_heads"],
        num_kv_heads=int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"]),
        vocab_size=cfg["vocab_size"], head_dim=int(cfg.get("head_dim") or 0),
    )  # fmt: skip


@dataclass(frozen=True)
class Grid:
    prefill_tokens: tuple[int, ...] = (16, 64, 256, 1024, 2048, 4096, 8192)
    decode_batch: tuple[int, ...] = (1, 8, 32, 64, 128, 256)
    decode_context: tuple[int, ...] = (128, 1024, 4096)

    def __post_init__(self) -> None:
        for key in ("prefill_tokens", "decode_batch", "decode_context"):
            values = getattr(self, key)
            if len(values) < 1 or any(v < 1 for v in values):
                raise ProfilerError(f"grid {key}: needs positive integers, got {values}")
        if len(self.prefill_tokens) < 3:
            raise ProfilerError("grid prefill_tokens: needs >= 3 points to fit a + b·T + c·T²")
        if len(self.decode_batch) * len(self.decode_context) < 3:
            raise ProfilerError("grid decode: needs >= 3 (batch, context) points to fit a + b·Σctx + c·B")


@dataclass(frozen=True)
class Fit:
    """Non-negative least squares coefficients and the residuals of the points they were fitted on."""

    coefficients: tuple[float, float, float]
    rms_residual_s: float
    max_relative_residual: float
    points: int


@dataclass
class ProfileRun:
    shape: ModelShape
    device: str
    dtype: str
    engine: str
    grid: Grid
    prefill: list[tuple[int, float]] = field(default_factory=list)  # (tokens, seconds)
    decode: list[tuple[int, int, float]] = field(default_factory=list)  # (batch, ctx per seq, seconds)
    prefill_fit: Fit | None = None
    decode_fit: Fit | None = None
    machine: str = ""
    torch_version: str = ""


def fit_nonnegative(rows: Sequence[Sequence[float]], times_s: Sequence[float]) -> Fit:
    """Fit times ≈ rows · x with x ≥ 0 (scipy NNLS); residuals on the same points."""
    import numpy as np

    try:
        from scipy.optimize import nnls
    except ImportError:
        raise ProfilerError(
            "the fit needs scipy in this Python (a vLLM-only environment lacks it: pip install scipy there)"
        ) from None

    a = np.asarray(rows, dtype=np.float64)
    y = np.asarray(times_s, dtype=np.float64)
    scale = np.maximum(np.abs(a).max(axis=0), 1e-30)  # column scaling keeps NNLS well conditioned
    x, _ = nnls(a / scale, y)
    coef = x / scale
    pred = a @ coef
    res = pred - y
    return Fit(
        coefficients=(float(coef[0]), float(coef[1]), float(coef[2])),
        rms_residual_s=float(np.sqrt(np.mean(res * res))),
        max_relative_residual=float(np.max(np.abs(res) / np.maximum(y, 1e-30))),
        points=int(y.size),
    )


# ------------------------------------------------------------------ torch timing
def _torch_model(shape: ModelShape, layers: int, device: Any, dtype: Any) -> Any:
    import torch
    from torch import nn

    d, hd, h, kvh = shape.hidden_size, shape.dim_per_head, shape.num_heads, shape.num_kv_heads

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1 = nn.RMSNorm(d)
            self.qkv = nn.Linear(d, (h + 2 * kvh) * hd, bias=False)
            self.o = nn.Linear(h * hd, d, bias=False)
            self.norm2 = nn.RMSNorm(d)
            self.gate_up = nn.Linear(d, 2 * shape.intermediate_size, bias=False)
            self.down = nn.Linear(shape.intermediate_size, d, bias=False)

        def forward(self, x: Any, k_cache: Any | None, v_cache: Any | None) -> Any:
            b, t, _ = x.shape
            q, k, v = self.qkv(self.norm1(x)).split([h * hd, kvh * hd, kvh * hd], dim=-1)
            q = q.view(b, t, h, hd).transpose(1, 2)
            k = k.view(b, t, kvh, hd).transpose(1, 2)
            v = v.view(b, t, kvh, hd).transpose(1, 2)
            if k_cache is not None:  # decode: one new token attends to the cached context
                k = torch.cat([k_cache, k], dim=2)
                v = torch.cat([v_cache, v], dim=2)
            attn = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=k_cache is None, enable_gqa=True
            )
            x = x + self.o(attn.transpose(1, 2).reshape(b, t, h * hd))
            gate, up = self.gate_up(self.norm2(x)).chunk(2, dim=-1)
            return x + self.down(torch.nn.functional.silu(gate) * up)

    class Stack(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(shape.vocab_size, d)
            self.layers = nn.ModuleList(Layer() for _ in range(layers))
            self.norm = nn.RMSNorm(d)
            self.head = nn.Linear(d, shape.vocab_size, bias=False)

    model = Stack().to(device=device, dtype=dtype).eval()
    return model


class _Timer:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs; CUDA events on a GPU."""

    def __init__(self, device: Any, repeats: int, warmup: int) -> None:
        import torch

        self.cuda = device.type == "cuda"
        self.repeats, self.warmup = repeats, warmup
        self.torch = torch

    def __call__(self, fn: Callable[[], object]) -> float:
        torch = self.torch
        for _ in range(self.warmup):
            fn()
        samples: list[float] = []
        if self.cuda:
            torch.cuda.synchronize()
            for _ in range(self.repeats):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                samples.append(start.elapsed_time(end) / 1000.0)
        else:
            for _ in range(self.repeats):
                t0 = time.perf_counter_ns()
                fn()
                samples.append((time.perf_counter_ns() - t0) / 1e9)
        return statistics.median(samples)


def resolve_device(name: str) -> Any:
    """``cpu`` or ``cuda`` (``cuda`` needs a visible GPU: a clear error otherwise)."""
    import torch

    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ProfilerError("--device cuda: torch sees no CUDA device (this torch build or machine has none)")
        return torch.device("cuda")
    raise ProfilerError(f"--device: expected cpu or cuda, got {name!r}")


def time_torch(
    shape: ModelShape,
    grid: Grid,
    device_name: str = "cpu",
    dtype_name: str | None = None,
    layers_timed: int | None = None,
    repeats: int = 5,
    warmup: int = 2,
    progress: Callable[[str], None] | None = None,
) -> ProfileRun:
    """Time prefill and decode steps of a random-weight ``shape`` model on the device (no fit yet)."""
    import torch

    device = resolve_device(device_name)
    dtype_key = dtype_name or ("bfloat16" if device.type == "cuda" else "float32")
    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if dtype_key not in dtypes:
        raise ProfilerError(f"--dtype: expected one of {', '.join(dtypes)}, got {dtype_key!r}")
    dtype = dtypes[dtype_key]
    k = min(shape.num_layers, layers_timed or shape.num_layers)
    if k < 1:
        raise ProfilerError("--layers must be >= 1")
    scale = shape.num_layers / k
    torch.manual_seed(0)
    model = _torch_model(shape, k, device, dtype)
    timer = _Timer(device, repeats, warmup)
    run = ProfileRun(shape, device.type, dtype_key, "torch", grid)
    hd, kvh = shape.dim_per_head, shape.num_kv_heads

    def step(x: Any, caches: list[tuple[Any, Any]] | None) -> Any:
        for i, layer in enumerate(model.layers):
            x = layer(x, *(caches[i] if caches else (None, None)))
        return x

    def head(x: Any) -> Any:
        return model.head(model.norm(x[:, -1, :]))

    with torch.inference_mode():
        for tokens in grid.prefill_tokens:
            ids = torch.randint(0, shape.vocab_size, (1, tokens), device=device)
            x = model.embed(ids)
            t_layers = timer(lambda x=x: step(x, None))
            t_head = timer(lambda x=x: head(x))
            run.prefill.append((tokens, t_head + scale * t_layers))
            if progress:
                progress(f"prefill T={tokens}")
        for batch in grid.decode_batch:
            for ctx in grid.decode_context:
                ids = torch.randint(0, shape.vocab_size, (batch, 1), device=device)
                x = model.embed(ids)
                caches = [
                    (torch.randn(batch, kvh, ctx, hd, device=device, dtype=dtype),
                     torch.randn(batch, kvh, ctx, hd, device=device, dtype=dtype))
                    for _ in range(k)
                ]  # fmt: skip
                t_layers = timer(lambda x=x, c=caches: step(x, c))
                t_head = timer(lambda x=x: head(x))
                run.decode.append((batch, ctx, t_head + scale * t_layers))
                del caches
                if progress:
                    progress(f"decode B={batch} ctx={ctx}")
    run.torch_version = torch.__version__
    run.machine = _machine(device)
    return run


def _machine(device: Any) -> str:
    if device.type == "cuda":
        import torch

        return f"{platform.node()} ({torch.cuda.get_device_name(device)})"
    return f"{platform.node()} ({platform.processor() or platform.machine()}, CPU)"


# ------------------------------------------------------------------ vLLM timing
def time_vllm(
    model_dir: str,
    grid: Grid,
    decode_steps: int = 16,
    progress: Callable[[str], None] | None = None,
    engine_args: dict[str, Any] | None = None,
) -> ProfileRun:
    """Time the real vLLM engine on its device (``vllm.LLM``); needs vLLM importable and a local model.
    ``engine_args`` go to ``vllm.LLM`` (e.g. ``max_model_len``, ``kv_cache_memory_bytes`` on CPU)."""
    try:
        import vllm
    except ImportError:
        raise ProfilerError(
            "--engine vllm: vllm is not importable in this Python (install it, e.g. the workers' .venv-vllm)"
        ) from None
    cfg_path = Path(model_dir) / "config.json"
    shape = shape_from_config(cfg_path)
    llm = vllm.LLM(model=model_dir, **(engine_args or {}))
    params_one = vllm.SamplingParams(max_tokens=1, ignore_eos=True, temperature=0.0)
    run = ProfileRun(shape, "vllm-device", "auto", f"vllm {vllm.__version__}", grid)

    def prompts(n: int, length: int) -> list[dict[str, list[int]]]:
        return [{"prompt_token_ids": [(i * 7919 + j) % max(shape.vocab_size - 1, 2) + 1 for j in range(length)]}
                for i in range(n)]  # fmt: skip

    llm.generate(prompts(1, 8), params_one, use_tqdm=False)  # warm-up
    for tokens in grid.prefill_tokens:
        t0 = time.perf_counter()
        llm.generate(prompts(1, tokens), params_one, use_tqdm=False)
        run.prefill.append((tokens, time.perf_counter() - t0))
        if progress:
            progress(f"vllm prefill T={tokens}")
    many = vllm.SamplingParams(max_tokens=1 + decode_steps, ignore_eos=True, temperature=0.0)
    for batch in grid.decode_batch:
        for ctx in grid.decode_context:
            p = prompts(batch, ctx)
            t0 = time.perf_counter()
            llm.generate(p, params_one, use_tqdm=False)
            t_prefill = time.perf_counter() - t0
            t0 = time.perf_counter()
            llm.generate(p, many, use_tqdm=False)
            t_total = time.perf_counter() - t0
            run.decode.append((batch, ctx, max(t_total - t_prefill, 1e-9) / decode_steps))
            if progress:
                progress(f"vllm decode B={batch} ctx={ctx}")
    run.machine = f"{platform.node()} (vLLM {vllm.__version__})"
    run.torch_version = _torch_version()
    return run


def _torch_version() -> str:
    try:
        import torch

        return str(torch.__version__)
    except ImportError:  # pragma: no cover - vLLM always brings torch
        return "unknown"


# ------------------------------------------------------------------ fit and write
def fit_run(run: ProfileRun) -> ProfileRun:
    """Fit the poly coefficients (a + b·T + c·T² for prefill, a + b·Σctx + c·B for decode)."""
    run.prefill_fit = fit_nonnegative([(1.0, t, float(t) * t) for t, _ in run.prefill], [s for _, s in run.prefill])
    run.decode_fit = fit_nonnegative([(1.0, float(b) * c, float(b)) for b, c, _ in run.decode],
                                     [s for _, _, s in run.decode])  # fmt: skip
    return run


def profile_document(
    run: ProfileRun,
    name: str,
    memory_bytes: float,
    gpus_per_replica: int = 1,
    max_num_seqs: int = 256,
    max_num_batched_tokens: int = 8192,
    dtype_bytes: int = 2,
    activation_bytes: float | None = None,
    gpu_memory_utilization: float = 0.9,
) -> dict[str, Any]:
    """The profile YAML document (``autoscaler.profiles`` format, ``type: poly``) for a fitted run."""
    if run.prefill_fit is None or run.decode_fit is None:
        raise ProfilerError("fit the run first (fit_run)")
    shape = run.shape
    if activation_bytes is None:  # vLLM's activation peak: ~2 GB for 8B-class models, less on small devices
        activation_bytes = min(2e9, 0.05 * memory_bytes)
    weight_bytes = shape.params * dtype_bytes
    kv_bytes = shape.kv_bytes_per_token(dtype_bytes)
    free = memory_bytes * gpu_memory_utilization - weight_bytes - activation_bytes
    if free <= kv_bytes:
        raise ProfilerError(
            f"no room for a KV cache: {memory_bytes:.3g} B x {gpu_memory_utilization} - weights "
            f"{weight_bytes:.3g} B - activations {activation_bytes:.3g} B; pass a larger --memory-gb"
        )
    pa, pb, pc = run.prefill_fit.coefficients
    da, db, dc = run.decode_fit.coefficients
    today = datetime.date.today().isoformat()
    grid = run.grid
    return {
        "name": name,
        "description": f"{shape.name} measured by pdscale profile ({run.engine}, {run.device}, {run.dtype})",
        "source": [
            f"Measured by `pdscale profile` on {run.machine}, {today}: engine {run.engine}, torch "
            f"{run.torch_version}, device {run.device}, dtype {run.dtype}, random weights of the model's shape.",
            f"Grid: prefill tokens {list(grid.prefill_tokens)}; decode batch {list(grid.decode_batch)} x context "
            f"per sequence {list(grid.decode_context)}.",
            f"Non-negative least squares: prefill rms residual {run.prefill_fit.rms_residual_s:.3g} s (max "
            f"{run.prefill_fit.max_relative_residual:.1%}) over {run.prefill_fit.points} points; decode rms "
            f"residual {run.decode_fit.rms_residual_s:.3g} s (max {run.decode_fit.max_relative_residual:.1%}) "
            f"over {run.decode_fit.points} points.",
            "KV capacity from memory arithmetic (memory x utilization - weights - activations) / KV bytes per "
            "token; host overheads (alpha terms) are not measured by a step profile and stay 0.",
        ],
        "model": {
            "name": shape.name, "params": shape.params, "layers": shape.num_layers,
            "hidden_size": shape.hidden_size, "kv_heads": shape.num_kv_heads, "head_dim": shape.dim_per_head,
            "dtype_bytes": dtype_bytes,
        },
        "hardware": {"gpu": run.machine, "gpus_per_replica": gpus_per_replica},
        "engine": {"max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens},
        "kv": {
            "bytes_per_token": kv_bytes, "memory_bytes": float(memory_bytes),
            "gpu_memory_utilization": gpu_memory_utilization, "weight_bytes": float(weight_bytes),
            "activation_bytes": float(activation_bytes), "capacity_tokens": int(free / kv_bytes),
        },
        "step": {
            "type": "poly",
            "prefill": {"a_s": max(pa, 1e-9), "b_s_per_token": pb, "c_s_per_token2": pc},
            "decode": {"a_s": max(da, 1e-9), "b_s_per_context_token": db, "c_s_per_seq": dc},
        },
    }


def write_profile(doc: dict[str, Any], path: Path) -> None:
    import yaml

    header = f"# {doc['name']}: written by `pdscale profile` ({doc['source'][0]})\n"
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False, width=110), encoding="utf-8")


def check_profile(path: Path) -> Any:
    """Load the written profile with the same loader ``sim``, ``bench``, ``plan`` and the policy use."""
    from autoscaler.profiles import load_profile

    return load_profile(str(path))


def default_memory_bytes(device_name: str) -> float:
    """The device's memory: the GPU's on CUDA, physical RAM on CPU."""
    if device_name == "cuda":
        import torch

        return float(torch.cuda.get_device_properties(0).total_memory)
    try:
        import os

        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 16e9


def summary_lines(run: ProfileRun) -> list[str]:
    """Human-readable residual report."""
    lines = []
    for label, fit in (("prefill", run.prefill_fit), ("decode", run.decode_fit)):
        if fit is None:
            continue
        a, b, c = fit.coefficients
        terms = "a + b·T + c·T²" if label == "prefill" else "a + b·Σctx + c·B"
        lines.append(
            f"{label}: {terms} with a={a:.4g} s, b={b:.4g}, c={c:.4g}; rms residual {fit.rms_residual_s:.3g} s, "
            f"max relative {fit.max_relative_residual:.1%} over {fit.points} points"
        )
    return lines

