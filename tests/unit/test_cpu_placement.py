"""workers.local.cpu_placement on real processes: a program that pins a thread and runs a busy-polling thread (the
two things real vLLM with NIXL does on CPU), placed the way the local kubelet places a Ready pod."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.local.cpu_placement import (
    ThreadSample,
    busy_pollers,
    group_pids,
    parse_cpus,
    place,
    sample_threads,
)
from workers.local.kubelet import KubeletOptions

PROGRAM = textwrap.dedent("""
    import os, sys, threading, time, select
    pinned_cpu = int(sys.argv[1])
    ids = {}
    def pinned():  # a thread its program pins, then sleeps (it must not take the GIL from the poller)
        ids["pinned"] = threading.get_native_id()
        os.sched_setaffinity(0, {pinned_cpu})
        time.sleep(600)
    def poller():  # polls with a zero timeout and never blocks, like NIXL's UCX progress thread
        ids["poller"] = threading.get_native_id()
        r, w = os.pipe()
        while True:
            select.select([r], [], [], 0)
    for f in (pinned, poller):
        threading.Thread(target=f, daemon=True).start()
    while len(ids) < 2:
        time.sleep(0.01)
    print(ids["pinned"], ids["poller"], flush=True)
    time.sleep(600)
""")


@pytest.fixture
def program() -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    allowed = sorted(os.sched_getaffinity(0))
    assert len(allowed) >= 2, f"this test needs 2 CPUs to move a thread between them, the process may use {allowed}"
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM, str(allowed[0])], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        pinned, poller = (int(x) for x in proc.stdout.readline().split())
        yield proc, pinned, poller
    finally:
        proc.kill()
        proc.wait()


def test_parse_cpus_reads_linux_cpu_lists_and_names_a_bad_one() -> None:
    assert parse_cpus("1") == {1}
    assert parse_cpus("0-2,5") == {0, 1, 2, 5}
    for bad in ("", "a", "3-1", "-1", "1-", "1,,2"):
        with pytest.raises(ValueError, match="bad CPU list"):
            parse_cpus(bad)


def test_kubelet_options_name_a_bad_cpu_list_of_a_role(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cpus_by_role\['decode'\]: bad CPU list '1-'"):
        KubeletOptions(log_dir=tmp_path, cpus_by_role={"prefill": "0", "decode": "1-"})


def test_busy_pollers_are_threads_that_never_blocked_and_kept_burning_cpu() -> None:
    def s(tid: int, cpu_s: float, voluntary: int, pid: int = 10) -> ThreadSample:
        return ThreadSample(pid, tid, cpu_s, voluntary)

    before = {10: s(10, 5.0, 0), 11: s(11, 3.0, 7), 12: s(12, 3.0, 40), 13: s(13, 0.1, 0), 14: s(14, 2.0, 0)}
    after = {10: s(10, 6.0, 0), 11: s(11, 3.9, 7), 12: s(12, 3.9, 41), 13: s(13, 0.2, 0), 14: s(14, 2.0, 0),
             15: s(15, 9.0, 0)}  # fmt: skip
    # 11 blocked before but not between the samples; 10: the main thread; 12 blocked between them; 13 used too
    # little; 14 did not run; 15 was not there before
    assert [t.tid for t in busy_pollers(before, after)] == [11]


def test_place_moves_pinned_threads_and_demotes_the_busy_poller(program: tuple[subprocess.Popen[str], int, int]) -> None:
    proc, pinned, poller = program
    target = max(os.sched_getaffinity(0))
    deadline = time.monotonic() + 30.0
    while sample_threads([proc.pid])[poller].cpu_s < 0.6:  # busy_pollers' floor is 0.5 s of CPU
        assert time.monotonic() < deadline, "the polling thread did not get 0.6 s of CPU in 30 s"
        time.sleep(0.1)
    assert group_pids(proc.pid) == [proc.pid]
    assert os.sched_getaffinity(pinned) != {target}
    detail = place(proc.pid, cpus=frozenset({target}), demote_busy_pollers=True, sample_s=0.5)
    assert os.sched_getaffinity(pinned) == {target}
    assert os.sched_getscheduler(poller) == os.SCHED_IDLE
    assert os.sched_getscheduler(pinned) == os.SCHED_OTHER
    assert os.sched_getaffinity(proc.pid) == os.sched_getaffinity(0)  # the main thread was not pinned: it floats
    assert "1 pinned thread(s) moved" in detail and f"SCHED_IDLE (tids {poller})" in detail, detail
    before = sample_threads([proc.pid])
    time.sleep(0.3)
    after = sample_threads([proc.pid])
    assert after[pinned].cpu_s == before[pinned].cpu_s  # asleep
    assert after[poller].voluntary_switches == before[poller].voluntary_switches  # SCHED_IDLE, still never blocks
