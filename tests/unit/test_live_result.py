"""A live run's loadgen records and pod history, turned into what the simulator's summaries read."""

from __future__ import annotations

import math

import numpy as np

from autoscaler.core.types import Pool
from workers.loadgen_report import RequestRecord
from workers.local.kubelet import HistoryEvent
from workers.local.live_result import gpu_seconds, live_pods, live_records


def test_records_keep_what_a_user_saw() -> None:
    done = RequestRecord(0, scheduled_s=1.0, sent_s=1.2, prompt_tokens=100, max_tokens=5, ok=True, ttft_s=0.3,
                         e2e_s=0.7, itl_s=[0.1, 0.05, 0.2, 0.05], output_tokens=5)  # fmt: skip
    cut = RequestRecord(1, scheduled_s=2.0, sent_s=2.0, prompt_tokens=50, max_tokens=8, ok=True, ttft_s=0.4,
                        e2e_s=0.9, itl_s=[0.1], output_tokens=2)  # stream ended early: not finished  # fmt: skip
    failed = RequestRecord(2, scheduled_s=3.0, sent_s=3.0, prompt_tokens=10, max_tokens=4, error="503")
    r = live_records([done, cut, failed])
    assert len(r) == 3
    np.testing.assert_allclose(r.arrival_s, [1.0, 2.0, 3.0])  # the workload's time: queueing in loadgen counts
    assert r.first_token_s[0] == 1.5 and r.first_token_s[1] == 2.4 and math.isinf(r.first_token_s[2])
    assert r.ttft_s[0] == 0.5  # from the scheduled time, not the send time
    assert list(r.finished) == [True, False, False]
    assert r.last_token_s[0] == 1.9 and math.isinf(r.last_token_s[1])
    assert r.itl_mean_s[0] == (0.7 - 0.3) / 4 and math.isnan(r.itl_mean_s[1])
    assert r.itl_max_s[0] == 0.2
    assert list(r.output_tokens) == [5, 8, 4]  # what was asked: a short stream is a miss, not a short request


def test_pods_clipped_to_the_run_and_charged_per_gpu() -> None:
    t0 = 1000.0
    ev = [HistoryEvent(t0 - 50, "ns", "old", "decode", "admitted"), HistoryEvent(t0 - 10, "ns", "old", "decode",
          "deleted"),  # gone before the run: left out
          HistoryEvent(t0 - 5, "ns", "p-1", "prefill", "admitted"),  # there at the start: from 0
          HistoryEvent(t0 + 20, "ns", "d-1", "decode", "admitted"), HistoryEvent(t0 + 80, "ns", "d-1", "decode",
          "deleted"),
          HistoryEvent(t0 + 30, "ns", "d-2", "decode", "admitted"),  # still there at the end
          HistoryEvent(t0 + 1, "other", "x", "decode", "admitted"),  # another namespace
          HistoryEvent(t0 + 1, "ns", "proxy", "proxy", "admitted")]  # no pool role  # fmt: skip
    pods = {p.name: p for p in live_pods(ev, t0, end_s=100.0, namespace="ns")}
    assert set(pods) == {"p-1", "d-1", "d-2"}
    assert (pods["p-1"].created_s, pods["p-1"].gone_s) == (0.0, 100.0)
    assert (pods["d-1"].created_s, pods["d-1"].gone_s) == (20.0, 80.0)
    assert (pods["d-2"].created_s, pods["d-2"].gone_s) == (30.0, 100.0)
    assert gpu_seconds(list(pods.values()), 2, 100.0) == {Pool.PREFILL: 200.0, Pool.DECODE: 2 * (60.0 + 70.0)}
