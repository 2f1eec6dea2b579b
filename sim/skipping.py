"""Event skipping: the simulator's fast mode, over the same scheduler state and rules as the per-step scheduler.

While an instance's batch is pure decode with constant membership, nothing changes between steps except that every
sequence gains one token and one KV slot. With a ``PolyModel`` the step times then form an arithmetic sequence
(Σcontext grows by the batch size per step: ``d_i = d_0 + i·growth``), so the next membership change (a finish, a
KV-forced preemption) is known in closed form and the k steps up to it form one *segment*: one event, committed in
bulk (tokens, KV, histogram buckets). For a step model without that closed form (``TableModel``,
``RooflineModel``, ...) the segment's step times are evaluated one by one ahead of time (``lookahead_steps``, up to
``MAX_LOOKAHEAD_STEPS``, adapting to how often arrivals cut segments short), still without events.

The driver cuts a segment short when an arrival could be admitted (``end_segment_for_admission``) and expands it
when counters are read mid-segment (``commit_steps_ending_by``); both keep results identical to the per-step
scheduler, which the tests check request by request.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left

import numpy as np

from autoscaler.core.buckets import ITL_BUCKETS_S
from sim.scheduler import InstanceScheduler

MAX_LOOKAHEAD_STEPS = 256  # most steps one segment spans when the step model has no closed form
_ITL_EDGES_S = ITL_BUCKETS_S
_ITL_EDGES_NP = np.asarray(ITL_BUCKETS_S, dtype=np.float64)
_heappop = heapq.heappop
_INF = math.inf


class SkippingScheduler(InstanceScheduler):
    """``InstanceScheduler`` whose pure-decode steps are planned and committed as segments (see module doc)."""

    fast = True
    __slots__ = ()

    # ------------------------------------------------------------------ planning
    def _decode_run_steps(self, now: float, batch: int, first_step_s: float) -> int:
        """Steps until the next membership change: the earliest finish, or the step whose KV slots do not fit."""
        h = self.finish_heap
        top = h[0]
        s = top[2]
        while not (s.decoding and s.heap_key == top[1]):  # drop stale entries (preempted, aborted)
            _heappop(h)
            top = h[0]
            s = top[2]
        if self._poly:
            k = top[0] - self.steps_done
            k_kv = 1 + (self.kv_capacity_tokens - self.kv_used_tokens) // batch
            return k_kv if k_kv < k else k
        if not first_step_s > 0:
            return 1  # form_step reports the bad step time
        k = min(
            top[0] - self.steps_done, 1 + (self.kv_capacity_tokens - self.kv_used_tokens) // batch,
            self.lookahead_steps,
        )  # fmt: skip
        step = self.step_model.decode_step_s
        ctx = self.decode_context_tokens
        durations = [first_step_s]
        t = now + first_step_s
        ends = [t]
        for i in range(1, k):
            d = step(batch, ctx + batch * i)
            if not d > 0:
                raise ValueError(f"profile {self.profile_name!r}: non-positive step time {d} s")
            durations.append(d)
            t = t + d
            ends.append(t)
        self.step_durations_s = durations
        self.step_ends_s = ends
        return k

    def step_end_s(self, j: int) -> float:
        """End time of the j-th step (1-based) of the current segment."""
        if self.step_ends_s is not None:
            return self.step_ends_s[j - 1]
        return self.segment_start_s + j * self.first_step_s + self.step_growth_s * (j * (j - 1) / 2)

    def steps_before(self, t: float) -> int:
        """Number of steps of the current segment that end strictly before ``t`` (0..k)."""
        k = self.segment_steps
        if self.step_ends_s is not None:
            m = bisect_left(self.step_ends_s, t)
            return m if m < k else k
        t0 = self.segment_start_s
        elapsed = t - t0
        if elapsed <= 0:
            return 0
        d0, growth = self.first_step_s, self.step_growth_s
        a = growth / 2
        if a > 1e-300:
            b = d0 - a
            guess = (-b + math.sqrt(b * b + 4 * a * elapsed)) / (2 * a)
        else:
            guess = elapsed / d0
        m = k if guess >= k else max(0, int(guess))
        # correct the guess against the exact step ends (step_end_s, inlined: this runs at every arrival)
        while m > 0 and t0 + m * d0 + growth * (m * (m - 1) / 2) >= t:
            m -= 1
        while m < k:
            j = m + 1
            if not t0 + j * d0 + growth * (j * (j - 1) / 2) < t:
                break
            m = j
        return m

    def kv_used_at(self, t_s: float) -> int:
        """KV slots in use at ``t_s`` as a per-step engine would show them (the segment's steps expanded)."""
        if not (self.busy and self.segment_steps > 1):
            return self.kv_used_tokens
        m = min(self.steps_before(t_s), self.segment_steps - 1)
        return self.kv_used_tokens + self.decode_batch * m

    def end_segment_for_admission(self, now_s: float) -> float | None:
        """A request joined an empty waiting queue at ``now_s``: end the segment at the first step boundary at or
        after ``now_s``, where the request may be admitted. Returns the segment's new end (reschedule it), or None
        when it did not move."""
        if len(self.running) >= self.max_num_seqs:
            return None
        j = self.steps_before(now_s) + 1
        if j >= self.segment_steps:
            return None
        self.segment_steps = j
        ends = self.step_ends_s
        if ends is not None:  # cut short: evaluate fewer steps ahead next time
            self.lookahead_steps = max(4, self.lookahead_steps // 2)
            return ends[j - 1]
        return self.segment_start_s + j * self.first_step_s + self.step_growth_s * (j * (j - 1) / 2)

    # ------------------------------------------------------------------ commit
    def commit_segment(self, steps: int) -> None:
        """Commit the first ``steps`` steps of the current segment in bulk."""
        batch = self.decode_batch
        if batch and self.step_ends_s is not None:  # a generic-model segment is pure decode: no chunks
            self._commit_generic(steps)
            return
        j = steps
        if batch:
            t0, d0, dl = self.segment_start_s, self.first_step_s, self.step_growth_s
            t_end = t0 + j * d0 + dl * (j * (j - 1) / 2)
            d_last = d0 + dl * (j - 1)
            self.note_segment_peak(d0 if d0 > d_last else d_last)
            self.steps_done = sd = self.steps_done + j
            pc = self.counters
            grow = batch * (j - 1)  # one more KV slot per request per step after the first (allocated at formation)
            self.kv_used_tokens += grow
            self.decode_context_tokens += grow
            self.decode_seq_s += batch * (t_end - t0)
            n_admitted = len(self.kv_admitted)
            if self.gap_log is not None:
                self.gap_log.add_run(t0, d0, dl, j, batch, n_admitted)
            tokens = batch * j
            pc.generation_tokens_total += tokens
            n_itl = tokens - n_admitted
            if n_itl:
                total = batch * (j * d0 + dl * (j * (j - 1) / 2)) - n_admitted * d0
                # the ITL bucket (lo, hi] of the last segment's first step: step times change slowly, so this
                # segment's steps usually fall in it too (two bisections saved)
                lo, hi = self.itl_bucket_bounds_s
                if not lo < d0 <= hi:
                    b = bisect_left(_ITL_EDGES_S, d0)
                    lo = _ITL_EDGES_S[b - 1] if b else -_INF
                    hi = _ITL_EDGES_S[b] if b < len(_ITL_EDGES_S) else _INF
                    self.itl_bucket = b
                    self.itl_bucket_bounds_s = (lo, hi)
                if lo < d_last <= hi:  # every step of the segment in one bucket
                    self.itl_pending[self.itl_bucket] += n_itl
                    h = pc.itl
                    h.sum += total
                    h.count += n_itl
                else:
                    w = np.full(j, batch, dtype=np.int64)
                    w[0] -= n_admitted
                    idx = np.searchsorted(_ITL_EDGES_NP, d0 + dl * np.arange(j), side="left")
                    add = np.bincount(idx, weights=w, minlength=_ITL_EDGES_NP.size + 1).astype(np.int64)
                    h = pc.itl
                    h.counts += add
                    h.sum += total
                    h.count += n_itl
            if n_admitted:
                excl = (d0 + dl if d0 + dl > d_last else d_last) if j >= 2 else -_INF
                self._kv_admitted_first_tokens(t0 + d0, excl)
            if self.finish_heap[0][0] <= sd:
                self._finish_due(t_end)
        else:
            self.steps_done += j
            t_end = self.segment_start_s + j * self.first_step_s
        if self.prefill_chunks:
            self._commit_chunks(t_end)

    def commit_steps_ending_by(self, t_s: float) -> bool:
        """Commit the steps of the segment that end at or before ``t_s``; the rest stays one segment. True when
        steps were committed (the segment now starts later: reschedule its end).

        No re-planning here: requests that arrived after those step ends must not be admitted in the past, and the
        segment was planned so that nothing changes before its end (or an arrival cut it short)."""
        m = self.steps_before(t_s)
        while m < self.segment_steps - 1 and self.step_end_s(m + 1) <= t_s:
            m += 1
        if m == 0 or m >= self.segment_steps:
            return False
        tm = self.step_end_s(m)
        ends = self.step_ends_s
        dm = self.step_durations_s[m] if ends is not None else self.first_step_s + self.step_growth_s * m
        self.commit_segment(m)
        batch = self.decode_batch
        self.kv_used_tokens += batch
        self.decode_context_tokens += batch
        self.segment_start_s = tm
        self.first_step_s = dm
        self.segment_steps -= m
        if ends is not None:
            self.step_ends_s = ends[m:]
            self.step_durations_s = self.step_durations_s[m:]
        return True

    def _kv_admitted_first_tokens(self, t1: float, excl: float) -> None:
        """KV-admitted sequences emitted their first token at the end of the segment's first step; their largest
        gap so far is the segment's longest step after the first (``excl``)."""
        nxt = self.segments_committed
        for s in self.kv_admitted:
            self._first_token(s, t1)
            s.max_itl_s = excl
            s.segment_index = nxt
        self.kv_admitted.clear()

    def _finish_due(self, t_end: float) -> None:
        """Sequences whose last token was emitted by the committed steps leave the batch."""
        h = self.finish_heap
        sd = self.steps_done
        while h and h[0][0] <= sd:
            _, key, s = _heappop(h)
            if not s.decoding or s.heap_key != key:
                continue
            m = self.longest_step_since(s.segment_index)
            if m > s.max_itl_s:
                s.max_itl_s = m
            self._finish_decoding(s, s.kv_tokens_at_base + sd - s.base_step, t_end)

    def _commit_generic(self, j: int) -> None:
        """``commit_segment`` for a pure-decode segment of a generic step model (explicit step times)."""
        batch = self.decode_batch
        if j == len(self.step_durations_s):  # ran to its planned end: look further ahead next time
            self.lookahead_steps = min(2 * self.lookahead_steps, MAX_LOOKAHEAD_STEPS)
        durations = self.step_durations_s[:j]
        ends: list[float] = self.step_ends_s  # type: ignore[assignment]
        t0 = self.segment_start_s
        t_end = ends[j - 1]
        self.note_segment_peak(max(durations))
        self.steps_done += j
        pc = self.counters
        grow = batch * (j - 1)  # as in commit_segment (kept inline: the hot path)
        self.kv_used_tokens += grow
        self.decode_context_tokens += grow
        self.decode_seq_s += batch * (t_end - t0)
        n_admitted = len(self.kv_admitted)
        pc.generation_tokens_total += batch * j
        pending = self.itl_pending
        edges = pc.itl.edges_s
        total = 0.0
        n_itl = 0
        gaps = self.gap_log
        for i, d in enumerate(durations):
            w = batch - n_admitted if i == 0 else batch
            if w:
                pending[bisect_left(edges, d)] += w
                total += d * w
                n_itl += w
                if gaps is not None:
                    gaps.add(ends[i], d, float(w))
        pc.itl.sum += total
        pc.itl.count += n_itl
        if n_admitted:
            self._kv_admitted_first_tokens(ends[0], max(durations[1:]) if j >= 2 else -_INF)
        if self.finish_heap[0][0] <= self.steps_done:
            self._finish_due(t_end)
        self.step_ends_s = None  # the run is committed (commit_steps_ending_by keeps what is left of it)
