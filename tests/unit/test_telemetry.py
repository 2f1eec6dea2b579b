"""autoscaler/telemetry.py: series from TickResults, readiness, the HTTP endpoints and JSON log lines."""

from __future__ import annotations

import json
import logging
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.controller import TickResult
from autoscaler.core.spec import SLO, AutoscalerSpec
from autoscaler.core.types import Decision, Observation, Pool, PoolDecision, PoolReplicas, Signals
from autoscaler.telemetry import ControllerTelemetry, JsonLogFormatter


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def tick(
    ttft: float | None = 0.4,
    itl: float | None = 0.02,
    rate: float | None = 5.0,
    error: str | None = None,
    applied: tuple[Pool, ...] = (Pool.PREFILL,),
    scale_errors: tuple[str, ...] = (),
) -> TickResult:
    sig = Signals(time_s=1.0, ttft_s=ttft, itl_s=itl, request_rate_per_s=rate, error=error)
    obs = Observation(1.0, sig, PoolReplicas(2, 1), PoolReplicas(4, 4))
    dec = Decision(
        1.0,
        PoolDecision(Pool.PREFILL, 2, 3, "TTFTAboveTarget", "up"),
        PoolDecision(Pool.DECODE, 4, 4, "WithinTarget", "hold"),
    )
    return TickResult(obs, dec, applied, scale_errors)


def value(t: ControllerTelemetry, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(t.exposition().decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def test_update_records_replicas_decisions_and_observations() -> None:
    t = ControllerTelemetry()
    spec = AutoscalerSpec(ttft=SLO(0.95, 0.8))
    t.update("ns/a", tick(), None, spec)
    t.update("ns/a", tick(applied=()), None, spec)
    assert value(t, "pdscale_desired_replicas", autoscaler="ns/a", pool="prefill") == 3.0
    assert value(t, "pdscale_current_replicas", autoscaler="ns/a", pool="prefill") == 2.0
    assert value(t, "pdscale_ready_replicas", autoscaler="ns/a", pool="prefill") == 1.0
    assert (
        value(t, "pdscale_decisions_total", autoscaler="ns/a", pool="prefill", reason="TTFTAboveTarget")
        == 2.0
    )
    assert value(t, "pdscale_scale_writes_total", autoscaler="ns/a", pool="prefill") == 1.0
    assert value(t, "pdscale_observed_latency_seconds", autoscaler="ns/a", signal="ttft") == 0.4
    assert value(t, "pdscale_slo_target_seconds", autoscaler="ns/a", signal="ttft", quantile="0.95") == 0.8
    assert value(t, "pdscale_observed_request_rate_per_second", autoscaler="ns/a") == 5.0


def test_missing_observations_remove_the_series() -> None:
    t = ControllerTelemetry()
    t.update("ns/a", tick())
    t.update("ns/a", tick(ttft=None, rate=None))
    assert value(t, "pdscale_observed_latency_seconds", autoscaler="ns/a", signal="ttft") is None
    assert value(t, "pdscale_observed_latency_seconds", autoscaler="ns/a", signal="itl") == 0.02
    assert value(t, "pdscale_observed_request_rate_per_second", autoscaler="ns/a") is None


@pytest.mark.parametrize(
    ("result", "error", "kind", "ready"),
    [
        (tick(), None, None, True),
        (None, "scale target not found", "tick", False),
        (tick(ttft=None, error="prometheus http://p: connection refused"), None, "metrics", False),
        (tick(scale_errors=("prefill: 409 conflict",)), None, "scale", False),
    ],
    ids=["success", "tick-failed", "metrics-error", "scale-error"],
)
def test_errors_and_readiness(
    result: TickResult | None, error: str | None, kind: str | None, ready: bool
) -> None:
    t = ControllerTelemetry()
    t.update("ns/a", result, error)
    assert t.readiness()[0] is ready
    if kind is not None:
        assert value(t, "pdscale_errors_total", kind=kind) == 1.0
        assert kind in t.readiness()[1]


def test_readiness_expires() -> None:
    clock = FakeClock()
    t = ControllerTelemetry(clock=clock, ready_max_age_s=60)
    assert t.readiness() == (False, "no successful tick yet")
    t.update("ns/a", tick())
    clock.t += 59
    assert t.readiness()[0] is True
    clock.t += 2
    assert t.readiness() == (False, "last successful tick 61 s ago")
    assert value(t, "pdscale_last_successful_tick_timestamp_seconds") == 1000.0


def test_pass_leader_and_forget() -> None:
    t = ControllerTelemetry()
    t.observe_pass(0.3, queries=11)
    t.set_leader(True)
    assert value(t, "pdscale_tick_duration_seconds_count") == 1.0
    assert value(t, "pdscale_prometheus_queries_per_tick") == 11.0
    assert value(t, "pdscale_leader") == 1.0
    t.update("ns/a", tick(), None, AutoscalerSpec())
    t.forget("ns/a")
    for name in (
        "pdscale_desired_replicas",
        "pdscale_observed_latency_seconds",
        "pdscale_slo_target_seconds",
    ):
        assert value(t, name, autoscaler="ns/a") is None


def test_registries_are_not_shared() -> None:
    a, b = ControllerTelemetry(), ControllerTelemetry()
    a.update("ns/a", tick())
    assert value(b, "pdscale_desired_replicas", autoscaler="ns/a") is None


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_http_endpoints() -> None:
    t = ControllerTelemetry(port=0, host="127.0.0.1")
    try:
        assert t.server is not None and t.server.port > 0
        base = f"http://127.0.0.1:{t.server.port}"
        assert _get(f"{base}/healthz") == (200, "ok\n")
        status, body = _get(f"{base}/readyz")
        assert status == 503 and "no successful tick yet" in body
        t.update("ns/a", tick())
        assert _get(f"{base}/readyz")[0] == 200
        status, body = _get(f"{base}/metrics")
        assert status == 200 and 'pdscale_desired_replicas{autoscaler="ns/a",pool="prefill"} 3.0' in body
    finally:
        t.close()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"autoscaler": "ns/a", "pool": "decode", "current": 2, "desired": 4, "reason": "ITLAboveTarget"},
         {"autoscaler": "ns/a", "pool": "decode", "current": 2, "desired": 4, "reason": "ITLAboveTarget"}),
        ({}, {}),
        ({"pool": Pool.PREFILL, "odd": object}, {"pool": "prefill", "odd": "<class 'object'>"}),
    ],
    ids=["controller-fields", "no-extra", "non-json-values-stringified"],
)  # fmt: skip
def test_json_log_lines(extra: dict[str, Any], expected: dict[str, Any]) -> None:
    record = logging.LogRecord("pdscale.controller", logging.INFO, "x.py", 1, "scaled %s", ("decode",), None)
    record.__dict__.update(extra)
    line = JsonLogFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert (
        entry["message"] == "scaled decode"
        and entry["level"] == "info"
        and entry["logger"] == "pdscale.controller"
    )
    assert entry["time"].endswith("+00:00")
    assert {k: entry[k] for k in expected} == expected
    assert set(entry) == {"time", "level", "logger", "message", *expected}


def test_json_log_includes_exception() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, "x.py", 1, "failed", (), sys.exc_info())
    entry = json.loads(JsonLogFormatter().format(record))
    assert "RuntimeError: boom" in entry["exception"]
