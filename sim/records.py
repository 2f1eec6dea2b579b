"""Per-request outcomes of a simulated run: what each client saw, in workload order.

``RequestLog`` is written by the engine as milestones happen (plain Python lists: one store per milestone on the hot
path); ``RequestRecords`` is its numpy snapshot, the engine's public result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RequestRecords:
    """Per-request outcome arrays (index = workload order); NaN where a stage was not reached, pods -1.

    ``prefill_pod``/``decode_pod`` index ``Engine.pods()``; in agg mode both name the one pod and ``prefill_end_s`` =
    ``kv_ready_s`` = ``first_token_s``. ``itl_mean_s`` = (last − first token) / (output − 1); ``itl_max_s`` is the
    largest gap (both NaN for one-token outputs and for unfinished requests, reported with ``finished`` False).
    """

    arrival_s: np.ndarray
    prefill_start_s: np.ndarray
    prefill_end_s: np.ndarray
    kv_ready_s: np.ndarray
    first_token_s: np.ndarray
    last_token_s: np.ndarray
    itl_mean_s: np.ndarray
    itl_max_s: np.ndarray
    prefill_pod: np.ndarray
    decode_pod: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    preemptions: np.ndarray
    finished: np.ndarray

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    @property
    def ttft_s(self) -> np.ndarray:
        return np.asarray(self.first_token_s - self.arrival_s)


class RequestLog:
    """Milestones of every request of a workload, as the engine records them."""

    __slots__ = (
        "arrival_s", "decode_pod", "finished", "first_token_s", "itl_max_s", "kv_ready_s", "last_token_s",
        "output_tokens", "preemptions", "prefill_end_s", "prefill_pod", "prefill_start_s", "prompt_tokens",
    )  # fmt: skip

    def __init__(self, arrival_s: list[float], prompt_tokens: list[int], output_tokens: list[int]) -> None:
        n = len(arrival_s)
        nan = [math.nan] * n
        self.arrival_s = arrival_s
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.prefill_start_s = list(nan)
        self.prefill_end_s = list(nan)
        self.kv_ready_s = list(nan)
        self.first_token_s = list(nan)
        self.last_token_s = list(nan)
        self.itl_max_s = list(nan)
        self.prefill_pod = [-1] * n
        self.decode_pod = [-1] * n
        self.preemptions = [0] * n
        self.finished = [False] * n

    def append(self, arrival_s: float, prompt_tokens: int, output_tokens: int) -> None:
        """One more request (a closed loop's client sent it), its milestones not reached yet."""
        self.arrival_s.append(arrival_s)
        self.prompt_tokens.append(prompt_tokens)
        self.output_tokens.append(output_tokens)
        for milestones in (
            self.prefill_start_s, self.prefill_end_s, self.kv_ready_s, self.first_token_s, self.last_token_s,
            self.itl_max_s,
        ):  # fmt: skip
            milestones.append(math.nan)
        self.prefill_pod.append(-1)
        self.decode_pod.append(-1)
        self.preemptions.append(0)
        self.finished.append(False)

    def records(self) -> RequestRecords:
        first = np.array(self.first_token_s)
        last = np.array(self.last_token_s)
        out = np.array(self.output_tokens, dtype=np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            itl_mean = np.where(out > 1, (last - first) / np.maximum(out - 1, 1), math.nan)
        itl_max = np.array(self.itl_max_s)
        itl_max[~np.isfinite(itl_max)] = math.nan
        done = np.array(self.finished, dtype=bool)
        itl_mean[~done] = math.nan
        itl_max[~done] = math.nan
        return RequestRecords(
            arrival_s=np.array(self.arrival_s),
            prefill_start_s=np.array(self.prefill_start_s),
            prefill_end_s=np.array(self.prefill_end_s),
            kv_ready_s=np.array(self.kv_ready_s),
            first_token_s=first,
            last_token_s=last,
            itl_mean_s=itl_mean,
            itl_max_s=itl_max,
            prefill_pod=np.array(self.prefill_pod, dtype=np.int64),
            decode_pod=np.array(self.decode_pod, dtype=np.int64),
            prompt_tokens=np.array(self.prompt_tokens, dtype=np.int64),
            output_tokens=out,
            preemptions=np.array(self.preemptions, dtype=np.int64),
            finished=done,
        )
