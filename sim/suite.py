"""Named workload suites for ``pdscale bench --suite NAME``: traffic the policy was and was not tuned on.

``generalization`` (issue 16) spans the shapes an autoscaler meets: flat traffic, diurnal ramps, a flash crowd,
a lull followed by a surge, a shift of the prompt length, long and very long prompts, and both Azure LLM 2023
traces at 50x with three seeds of the copies' shifts (``sim.workload.replicate``). Each entry is a seeded
generator spec (``sim.workload.generate``; the rate profiles are piecewise-linear, written as ``piecewise`` rates
every 10 s) or a trace, with its own SLO (a long prompt cannot meet a 1 s TTFT on its own) and the surges whose
response the bench reports (minutes above target against the physical minimum).

Each entry has a role: ``train`` entries are the ones the policy's parameters were chosen on; ``held-out`` entries
were only run to check them. ``describe_suite`` prints the table (``pdscale bench --suite NAME --list``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sim.workload import Workload, generate, load_trace, replicate

PROFILE_STEP_S = 10.0  # piecewise rate profiles change every 10 s
HOUR_S = 3600.0
ROLES = ("train", "held-out")


@dataclass(frozen=True)
class Surge:
    """A labelled rise of the load inside a suite workload: [start_s, end_s) is the time the load is high."""

    start_s: float
    end_s: float
    label: str


@dataclass(frozen=True)
class Counterfactual:
    """The same traffic as a suite entry without its sudden change: a generator spec with the entry's streams in
    the entry's order (so each stream draws from the same seed), and what it is, in words. Before the change the
    two are the same process; ``bench/surge_feasibility.py`` splices them at the change (``sim.feasibility``)."""

    generator: str
    description: str


@dataclass(frozen=True)
class SuiteEntry:
    """One workload of a suite: a generator spec, or a trace file replicated ``rate_scale`` times (seed ``seed``)."""

    name: str
    description: str
    role: str
    generator: str | None = None
    trace: str | None = None  # a file name in the trace folder (../shared/traces)
    rate_scale: float = 1.0
    seed: int = 0
    ttft_p99_s: float = 1.0
    itl_p99_s: float = 0.05
    surges: tuple[Surge, ...] = ()
    counterfactual: Counterfactual | None = None  # the traffic without its first surge (a sudden change)

    def __post_init__(self) -> None:
        if (self.generator is None) == (self.trace is None):
            raise ValueError(f"suite entry {self.name!r}: give exactly one of generator and trace")
        if self.role not in ROLES:
            raise ValueError(f"suite entry {self.name!r}: role must be one of {', '.join(ROLES)}")
        if self.counterfactual is not None and not self.surges:
            raise ValueError(f"suite entry {self.name!r}: a counterfactual needs the surge it leaves out")

    def workload(self, trace_dir: Path) -> Workload:
        if self.trace is not None:
            base = load_trace(trace_dir / self.trace)
            w = replicate(base, self.rate_scale, seed=self.seed)
        else:
            assert self.generator is not None
            w = generate(self.generator, seed=self.seed)
        return Workload(self.name, w.arrival_s, w.prompt_tokens, w.output_tokens, w.horizon_s)


def rate_profile(
    points: Sequence[tuple[float, float]], duration_s: float, step_s: float = PROFILE_STEP_S
) -> str:
    """``piecewise`` rates (slash-separated, one per ``step_s``) following the piecewise-linear profile through
    ``points`` [(time_s, rate_per_s), ...] (constant before the first and after the last), sampled at step mids."""
    times = [p[0] for p in points]
    if times != sorted(times):
        raise ValueError("rate profile points must be in time order")
    out = []
    n = round(duration_s / step_s)
    for i in range(n):
        t = (i + 0.5) * step_s
        out.append(_interp(points, t))
    return "/".join(f"{r:.4g}" for r in out)


def _interp(points: Sequence[tuple[float, float]], t: float) -> float:
    if t <= points[0][0]:
        return points[0][1]
    for (t0, r0), (t1, r1) in itertools.pairwise(points):
        if t <= t1:
            return r0 if t1 == t0 else r0 + (r1 - r0) * (t - t0) / (t1 - t0)
    return points[-1][1]


def _stream(
    points: Sequence[tuple[float, float]], lengths: str, name: str, duration_s: float = HOUR_S
) -> str:
    return (
        f"piecewise:name={name},rates={rate_profile(points, duration_s)},every={PROFILE_STEP_S:g},"
        f"duration={duration_s:g},{lengths}"
    )


# lengths used below (means: conv prompt ~1.16k / output ~210 tokens; "chat" prompt 2k / output 250)
CONV = "prompt=azure_conv(),output=azure_conv()"
CHAT = "prompt=lognormal(2000,1.0),output=exp(250),max_prompt=32768,max_output=4096"
LONG_DOC = "prompt=lognormal(6000,0.6),output=exp(250),max_prompt=32768,max_output=4096"
# long prompts: median 7k, p99 ~85k tokens (lognormal sigma 1.07; mean ~12.4k), capped at the 128k context
LONG = "prompt=lognormal(12400,1.07),output=exp(300),max_prompt=131072,max_output=4096"
# very long prompts: median ~30k, p99 ~120k (sigma 0.6; mean ~36k), capped at the 128k context
VERY_LONG = "prompt=lognormal(36000,0.6),output=exp(400),max_prompt=131072,max_output=4096"


def _generalization() -> tuple[SuiteEntry, ...]:
    flat = _stream([(0, 100.0)], CHAT, "flat")
    # a day's swing compressed to 30 min periods (two cycles an hour), from its trough: 40 -> 160 -> 40 req/s
    diurnal = f"sine:name=diurnal,rate=100,amplitude=0.6,period=1800,phase=450,duration={HOUR_S:g},{CHAT}"
    # 80 req/s, a crowd of +120 req/s arriving over 2 min at minute 20, staying 10 min, leaving over 5 min
    crowd_at, crowd_ramp, crowd_hold, crowd_leave = 1200.0, 120.0, 600.0, 300.0
    crowd_end = crowd_at + crowd_ramp + crowd_hold
    crowd_base = _stream([(0, 80.0)], CHAT, "base")
    flash = " + ".join([
        crowd_base,
        _stream([(crowd_at, 0.0), (crowd_at + crowd_ramp, 120.0), (crowd_end, 120.0),
                 (crowd_end + crowd_leave, 0.0)], CHAT, "crowd"),
    ])  # fmt: skip
    no_crowd = " + ".join([crowd_base, _stream([(0, 0.0)], CHAT, "crowd")])
    # the Azure code seed-2 failure, made explicit: 100 req/s, a lull at 8 req/s from minute 15 to 27, then a
    # climb to 150 req/s over 5 min (18x), held to the end
    lull_points = [(0, 100.0), (840, 100.0), (900, 8.0)]
    lull = _stream([*lull_points, (1620, 8.0), (1920, 150.0)], CHAT, "lull-surge")
    lull_forever = _stream(lull_points, CHAT, "lull-surge")
    # 90 req/s throughout; the prompts shift from chat (mean 2k) to documents (mean 6k) over 2 min at minute 20,
    # and back at minute 40 (3x the prefill work at the same request rate)
    shift = " + ".join([
        _stream([(0, 90.0), (1200, 90.0), (1320, 0.0), (2400, 0.0), (2520, 90.0)], CHAT, "chat"),
        _stream([(0, 0.0), (1200, 0.0), (1320, 90.0), (2400, 90.0), (2520, 0.0)], LONG_DOC, "documents"),
    ])  # fmt: skip
    no_shift = " + ".join([_stream([(0, 90.0)], CHAT, "chat"), _stream([(0, 0.0)], LONG_DOC, "documents")])
    # long prompts on a slowly varying, bursty arrival process (gamma cv 2) over 40 min periods
    long = (
        f"gamma:name=long-prompts,rate=24,cv=2,duration={HOUR_S:g},{LONG}"
        f" + sine:name=long-swing,rate=8,amplitude=1,period=2400,duration={HOUR_S:g},{LONG}"
    )
    very_long = (
        f"gamma:name=very-long-prompts,rate=6,cv=2,duration={HOUR_S:g},{VERY_LONG}"
        f" + sine:name=very-long-swing,rate=2,amplitude=1,period=2400,duration={HOUR_S:g},{VERY_LONG}"
    )
    entries = [
        SuiteEntry("flat", "Poisson 100 req/s, chat lengths (prompt 2k, output 250)", "train", flat),
        SuiteEntry("diurnal", "40-160 req/s sine, two 30 min cycles from the trough", "train", diurnal),
        SuiteEntry(
            "flash-crowd",
            "80 req/s, +120 req/s over 2 min at minute 20 for 10 min",
            "train",
            flash,
            surges=(Surge(crowd_at, crowd_end, "crowd arrives"),),
            counterfactual=Counterfactual(no_crowd, "80 req/s, no crowd"),
        ),
        SuiteEntry(
            "lull-surge",
            "100 req/s, a lull at 8 req/s (min 15-27), back to 150 req/s over 5 min",
            "held-out",
            lull,
            surges=(Surge(1620.0, HOUR_S, "climb after the lull"),),
            counterfactual=Counterfactual(lull_forever, "100 req/s, then the lull (8 req/s) to the end"),
        ),
        SuiteEntry(
            "prompt-shift",
            "90 req/s; prompts 2k -> 6k at minute 20 (over 2 min), back at minute 40",
            "held-out",
            shift,
            surges=(Surge(1200.0, 2400.0, "documents"),),
            counterfactual=Counterfactual(no_shift, "90 req/s, chat prompts throughout"),
        ),
        SuiteEntry(
            "long-prompts",
            "~32 req/s gamma cv 2, prompt p50 7k / p99 85k tokens; TTFT p99 <= 10 s",
            "train",
            long,
            ttft_p99_s=10.0,
        ),
        SuiteEntry(
            "very-long-prompts",
            "~8 req/s gamma cv 2, prompt p50 30k / p99 120k tokens; TTFT p99 <= 20 s",
            "held-out",
            very_long,
            ttft_p99_s=20.0,
        ),
    ]
    for trace, short in (("azure_llm_2023_conv.csv", "conv"), ("azure_llm_2023_code.csv", "code")):
        for seed in (0, 1, 2):
            entries.append(
                SuiteEntry(
                    f"{short}-s{seed}",
                    f"Azure LLM 2023 {short} x50, copies shifted with seed {seed}",
                    "train" if seed == 0 else "held-out",
                    trace=trace,
                    rate_scale=50.0,
                    seed=seed,
                )
            )
    return tuple(entries)


SUITES = {"generalization": _generalization}


def suite(name: str) -> tuple[SuiteEntry, ...]:
    try:
        return SUITES[name]()
    except KeyError:
        raise KeyError(f"unknown suite {name!r}; known: {', '.join(sorted(SUITES))}") from None


def select(
    entries: Sequence[SuiteEntry], names: Sequence[str] = (), role: str | None = None
) -> list[SuiteEntry]:
    """The entries named in ``names`` (all when empty) with ``role`` (any when None); unknown names raise."""
    known = {e.name for e in entries}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(
            f"unknown suite workload(s) {', '.join(unknown)}; known: {', '.join(e.name for e in entries)}"
        )
    if role is not None and role not in ROLES:
        raise KeyError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    return [e for e in entries if (not names or e.name in names) and (role is None or e.role == role)]


def describe_suite(entries: Sequence[SuiteEntry]) -> list[str]:
    """One line per entry: name, role, SLO, description."""
    return [
        f"{e.name:<18} {e.role:<8} TTFT p99 <= {e.ttft_p99_s:g} s, ITL p99 <= {e.itl_p99_s * 1e3:g} ms  "
        f"{e.description}"
        for e in entries
    ]
