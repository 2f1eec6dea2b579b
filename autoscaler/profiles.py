"""Latency profiles: YAML files (built-in ones in ``autoscaler/profiles/``) -> ``LatencyProfile``.

A profile file names the model, the GPU arrangement of one replica, the engine limits, the KV cache size and a
step model, and cites where every number comes from (``source:``). A user profile is a file of the same format,
passed by path wherever a built-in name is accepted. Format::

    name: my-model-h100-tp1
    description: free text (optional)
    source: [citation, ...]              # or one string; required, non-empty
    model: {name, params, layers, hidden_size, kv_heads, head_dim, dtype_bytes,   # shape; needed for roofline
            vocab_size}                  # optional: the input-embedding rows, which a step gathers, not streams
    hardware: {gpu, gpus_per_replica, flops_per_s, hbm_bytes_per_s}                # the last two for roofline
    engine: {max_num_seqs: 256, max_num_batched_tokens: 8192}
    kv:
      bytes_per_token: 131072            # optional when model: is given (2*layers*kv_heads*head_dim*dtype_bytes)
      capacity_tokens: 411529            # per replica; or computed from the four fields below, which, when
      memory_bytes: 80e9                 # given together with capacity_tokens, must agree with it within 1%:
      gpu_memory_utilization: 0.9        # (memory_bytes*utilization - weight_bytes - activation_bytes)
      weight_bytes: 16.06e9              #   / bytes_per_token
      activation_bytes: 2e9
    step:                                # one of:
      type: poly                         #   prefill {a_s, b_s_per_token, c_s_per_token2}
                                         #   decode {a_s, b_s_per_context_token, c_s_per_seq}
      type: table                        #   prefill {tokens: [...], step_s: [...]}
                                         #   decode {batch: [...], context_per_seq: [...], step_s: [[...], ...]}
      type: roofline                     #   mfu, bw_efficiency, kv_bw_efficiency, overhead_s, per_seq_s
                                         #   (model: and hardware: used)
    host:                                # optional, all >= 0, default 0 (BLIS alpha terms, HostOverheads)
      request_s: 2.3e-4                  #   alpha0: per request, arrival -> engine queue (not engine time)
      request_per_prompt_token_s: 1.75e-6  # alpha1: per prompt token, same place
      output_token_s: 0.0                #   alpha2: per output token, added to TTFT and every client ITL gap

Errors raise ``ProfileError`` naming the file and the dotted field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autoscaler.core.latency import (
    NO_HOST_OVERHEADS,
    HostOverheads,
    LatencyProfile,
    PolyModel,
    RooflineModel,
    StepModel,
    TableModel,
    kv_bytes_per_token,
    prefill_tokens_per_s,
)

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"


class ProfileError(ValueError):
    """A profile file is missing, unparsable or invalid; the message names the file and field."""


def builtin_profiles() -> list[str]:
    """Names of the profiles shipped in ``autoscaler/profiles/``."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def profile_path(name_or_path: str) -> Path:
    """Resolve a built-in name or a file path to the YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        if not candidate.is_file():
            raise ProfileError(f"{candidate}: no such profile file")
        return candidate
    builtin = PROFILE_DIR / f"{name_or_path}.yaml"
    if builtin.is_file():
        return builtin
    raise ProfileError(
        f"unknown profile {name_or_path!r}: not a file and not a built-in ({', '.join(builtin_profiles())})"
    )


def load_profile(name_or_path: str) -> LatencyProfile:
    """Load a built-in profile by name, or a user profile file by path."""
    return load_profile_file(profile_path(name_or_path))


def load_profile_file(path: Path) -> LatencyProfile:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: invalid YAML: {exc}") from None
    return parse_profile(doc, str(path))


@dataclass(frozen=True)
class _Fields:
    """Typed reads from a YAML mapping, with errors naming file and dotted field."""

    where: str
    data: dict[str, Any]
    prefix: str = ""

    def _name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def fail(self, key: str, msg: str) -> ProfileError:
        return ProfileError(f"{self.where}: field {self._name(key)!r}: {msg}")

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def sub(self, key: str, required: bool = True) -> _Fields | None:
        if not self.has(key):
            if required:
                raise self.fail(key, "missing")
            return None
        value = self.data[key]
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {type(value).__name__}")
        return _Fields(self.where, value, f"{self._name(key)}.")

    def num(self, key: str, *, default: float | None = None, minimum: float = 0.0, strict: bool = False) -> float:
        if not self.has(key):
            if default is None:
                raise self.fail(key, "missing")
            return default
        value = self.data[key]
        if isinstance(value, str):
            try:
                value = float(value)  # YAML 1.1 reads "1e9" (no dot) as a string
            except ValueError:
                raise self.fail(key, f"expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(key, f"expected a finite number, got {value!r}")
        if value < minimum or (strict and value <= minimum):
            raise self.fail(key, f"must be {'>' if strict else '>='} {minimum:g}, got {value!r}")
        return float(value)

    def integer(self, key: str, *, default: int | None = None, minimum: int = 1) -> int:
        value = self.num(key, default=None if default is None else float(default), minimum=minimum)
        if value != int(value):
            raise self.fail(key, f"expected an integer, got {value!r}")
        return int(value)

    def text(self, key: str, *, default: str | None = None) -> str:
        if not self.has(key):
            if default is None:
                raise self.fail(key, "missing")
            return default
        value = self.data[key]
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "expected a non-empty string")
        return value.strip()

    def numbers(self, key: str) -> tuple[float, ...]:
        if not self.has(key):
            raise self.fail(key, "missing")
        value = self.data[key]
        if not isinstance(value, list) or not value:
            raise self.fail(key, "expected a non-empty list of numbers")
        row = _Fields(self.where, {str(i): v for i, v in enumerate(value)}, f"{self._name(key)}[")
        return tuple(row.num(str(i)) for i in range(len(value)))


_TOP_KEYS = {"name", "description", "source", "model", "hardware", "engine", "kv", "step", "host"}
_HOST_KEYS = {"request_s", "request_per_prompt_token_s", "output_token_s"}


def parse_profile(doc: object, where: str) -> LatencyProfile:
    """Validate a parsed YAML document (``where`` names it in errors) and build the profile."""
    if not isinstance(doc, dict):
        raise ProfileError(f"{where}: expected a mapping at the top level")
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise ProfileError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")
    top = _Fields(where, doc)
    name = top.text("name")
    source = _source(top)
    model = top.sub("model", required=False)
    hardware = top.sub("hardware")
    assert hardware is not None
    engine = top.sub("engine", required=False) or _Fields(where, {}, "engine.")
    kv = top.sub("kv")
    assert kv is not None
    step_fields = top.sub("step")
    assert step_fields is not None

    gpus = hardware.integer("gpus_per_replica", default=1)
    model_kv: int | None = None
    if model is not None:
        model_kv = kv_bytes_per_token(
            model.integer("layers"), model.integer("kv_heads"), model.integer("head_dim"),
            model.num("dtype_bytes", strict=True),
        )
    if kv.has("bytes_per_token"):
        kv_bytes = kv.integer("bytes_per_token")
        if model_kv is not None and kv_bytes != model_kv:
            raise kv.fail("bytes_per_token", f"{kv_bytes} disagrees with the model shape ({model_kv})")
    elif model_kv is not None:
        kv_bytes = model_kv
    else:
        raise kv.fail("bytes_per_token", "missing (and no model: block to derive it from)")
    capacity = _kv_capacity(kv, kv_bytes)

    step = _step_model(step_fields, model, hardware, gpus)
    profile = LatencyProfile(
        name=name,
        source=source,
        step=step,
        gpus_per_replica=gpus,
        kv_bytes_per_token=kv_bytes,
        kv_capacity_tokens=capacity,
        max_num_seqs=engine.integer("max_num_seqs", default=256),
        max_num_batched_tokens=engine.integer("max_num_batched_tokens", default=8192),
        host=_host(top.sub("host", required=False)),
    )
    _sanity(profile, where)
    return profile


def _source(top: _Fields) -> str:
    if not top.has("source"):
        raise top.fail("source", "missing: cite where the numbers come from")
    value = top.data["source"]
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(s, str) and s.strip() for s in items):
        raise top.fail("source", "expected a non-empty string or list of strings")
    return " | ".join(" ".join(s.split()) for s in items)


def _host(host: _Fields | None) -> HostOverheads:
    if host is None:
        return NO_HOST_OVERHEADS
    unknown = sorted(set(host.data) - _HOST_KEYS)
    if unknown:
        raise host.fail(unknown[0], f"unknown field; expected one of {', '.join(sorted(_HOST_KEYS))}")
    return HostOverheads(
        request_s=host.num("request_s", default=0.0),
        request_per_prompt_token_s=host.num("request_per_prompt_token_s", default=0.0),
        output_token_s=host.num("output_token_s", default=0.0),
    )


def _kv_capacity(kv: _Fields, kv_bytes: int) -> int:
    parts = ("memory_bytes", "gpu_memory_utilization", "weight_bytes", "activation_bytes")
    given = [p for p in parts if kv.has(p)]
    computed: float | None = None
    if given:
        missing = [p for p in parts if p not in given]
        if missing:
            raise kv.fail(missing[0], "missing (capacity arithmetic needs all of " + ", ".join(parts) + ")")
        util = kv.num("gpu_memory_utilization", strict=True)
        if util > 1:
            raise kv.fail("gpu_memory_utilization", f"must be <= 1, got {util:g}")
        free = kv.num("memory_bytes", strict=True) * util - kv.num("weight_bytes") - kv.num("activation_bytes")
        if free <= 0:
            raise kv.fail("memory_bytes", "no memory left for the KV cache after weights and activations")
        computed = free / kv_bytes
    if kv.has("capacity_tokens"):
        capacity = kv.integer("capacity_tokens")
        if computed is not None and abs(capacity - computed) > 0.01 * computed:
            raise kv.fail("capacity_tokens", f"{capacity} disagrees with the memory arithmetic ({computed:.0f})")
        return capacity
    if computed is None:
        raise kv.fail("capacity_tokens", "missing (give it, or memory_bytes/gpu_memory_utilization/...)")
    return int(computed)


def _step_model(step: _Fields, model: _Fields | None, hardware: _Fields, gpus: int) -> StepModel:
    kind = step.text("type")
    if kind == "poly":
        pre, dec = step.sub("prefill"), step.sub("decode")
        assert pre is not None and dec is not None
        return PolyModel(
            prefill_a_s=pre.num("a_s"),
            prefill_b_s_per_token=pre.num("b_s_per_token"),
            prefill_c_s_per_token2=pre.num("c_s_per_token2", default=0.0),
            decode_a_s=dec.num("a_s"),
            decode_b_s_per_context_token=dec.num("b_s_per_context_token"),
            decode_c_s_per_seq=dec.num("c_s_per_seq", default=0.0),
        )
    if kind == "table":
        pre, dec = step.sub("prefill"), step.sub("decode")
        assert pre is not None and dec is not None
        if not isinstance(dec.data.get("step_s"), list):
            raise dec.fail("step_s", "expected a list of rows (one per batch point)")
        rows = tuple(
            _Fields(dec.where, {"row": r}, f"{dec.prefix}step_s[{i}].").numbers("row")
            for i, r in enumerate(dec.data["step_s"])
        )
        try:
            return TableModel(
                prefill_tokens=pre.numbers("tokens"),
                prefill_s=pre.numbers("step_s"),
                decode_batch=dec.numbers("batch"),
                decode_context_per_seq=dec.numbers("context_per_seq"),
                decode_s=rows,
            )
        except ValueError as exc:
            if isinstance(exc, ProfileError):
                raise
            raise ProfileError(f"{step.where}: field 'step': {exc}") from None
    if kind == "roofline":
        if model is None:
            raise step.fail("type", "roofline needs a model: block (params, layers, hidden_size, ...)")
        return RooflineModel(
            params=model.num("params", strict=True),
            layers=model.integer("layers"),
            hidden_size=model.integer("hidden_size"),
            kv_heads=model.integer("kv_heads"),
            head_dim=model.integer("head_dim"),
            dtype_bytes=model.num("dtype_bytes", strict=True),
            gpu_flops_per_s=hardware.num("flops_per_s", strict=True),
            hbm_bytes_per_s=hardware.num("hbm_bytes_per_s", strict=True),
            mfu=_fraction(step, "mfu", 0.55),
            bw_efficiency=_fraction(step, "bw_efficiency", 0.8),
            kv_bw_efficiency=_fraction(step, "kv_bw_efficiency", 1.0) if step.has("kv_bw_efficiency") else None,
            overhead_s=step.num("overhead_s", default=0.004),
            per_seq_s=step.num("per_seq_s", default=0.0),
            num_gpus=gpus,
            vocab_size=model.integer("vocab_size", default=0, minimum=0),
        )
    raise step.fail("type", f"unknown step model {kind!r}; expected poly, table or roofline")


def _fraction(f: _Fields, key: str, default: float) -> float:
    value = f.num(key, default=default, strict=True)
    if value > 1:
        raise f.fail(key, f"must be in (0, 1], got {value:g}")
    return value


def _sanity(p: LatencyProfile, where: str) -> None:
    """Cheap physical checks: positive times, monotone in tokens and batch over the engine's range."""
    chunk = p.max_num_batched_tokens
    prev = 0.0
    for t in (1, chunk // 4, chunk // 2, chunk):
        s = p.step.prefill_step_s(float(t))
        if not (s > 0 and math.isfinite(s)) or s < prev:
            raise ProfileError(f"{where}: field 'step': prefill step time must be positive and non-decreasing")
        prev = s
    prev = 0.0
    for b in (1, max(1, p.max_num_seqs // 2), p.max_num_seqs):
        s = p.step.decode_step_s(b, b * 1024.0)
        if not (s > 0 and math.isfinite(s)) or s < prev:
            raise ProfileError(f"{where}: field 'step': decode step time must be positive and non-decreasing")
        prev = s


def profile_summary(p: LatencyProfile) -> dict[str, Any]:
    """Key numbers of a profile, for ``pdscale profiles`` (times in seconds, rates per second)."""
    return {
        "name": p.name,
        "model": type(p.step).__name__.removesuffix("Model").lower(),
        "gpus_per_replica": p.gpus_per_replica,
        "prefill_tokens_per_s_at_8k": prefill_tokens_per_s(p, 8192),
        "prefill_step_s_at_8k": p.step.prefill_step_s(8192.0),
        "decode_step_s_b1_ctx1k": p.step.decode_step_s(1, 1024.0),
        "decode_step_s_b64_ctx1k": p.step.decode_step_s(64, 64 * 1024.0),
        "decode_step_s_b256_ctx1k": p.step.decode_step_s(256, 256 * 1024.0),
        "kv_bytes_per_token": p.kv_bytes_per_token,
        "kv_capacity_tokens": p.kv_capacity_tokens,
        "max_num_seqs": p.max_num_seqs,
        "max_num_batched_tokens": p.max_num_batched_tokens,
        "host_request_s": p.host.request_s,
        "host_request_per_prompt_token_s": p.host.request_per_prompt_token_s,
        "host_output_token_s": p.host.output_token_s,
        "source": p.source,
    }
