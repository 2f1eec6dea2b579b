"""StepTokens: token events grouped by engine step (shared deadline) into vllm:iteration_tokens_total samples."""

from __future__ import annotations

from workers.metrics import StepTokens


def test_steps_are_observed_once_complete_or_when_idle() -> None:
    seen: list[int] = []
    steps = StepTokens(seen.append)
    steps.add(1.0, 101)  # step 1: a prefill of 100 prompt tokens plus its first token
    steps.add(1.0, 1)  # step 1: another request's decode token
    steps.add(2.0, 1)
    assert seen == []  # step 1 may still get a late handler's token
    steps.add(1.0, 1)  # a handler one step behind
    steps.add(2.0, 1)
    steps.add(3.0, 1)  # step 3 begins: step 1 is complete
    assert seen == [103]
    steps.flush()  # idle
    assert seen == [103, 2, 1]
    steps.flush()
    assert seen == [103, 2, 1]
