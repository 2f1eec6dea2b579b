"""HPA v2 normalization, ported from the pure-function tests of kubernetes/kubernetes
``pkg/controller/podautoscaler/horizontal_test.go`` (case names and numbers kept; inputs re-expressed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.core.behavior import (
    DESIRED_WITHIN_RANGE,
    SCALE_DOWN_LIMIT,
    SCALE_DOWN_STABILIZED,
    SCALE_UP_LIMIT,
    SCALE_UP_STABILIZED,
    TOO_FEW_REPLICAS,
    TOO_MANY_REPLICAS,
    BehaviorState,
    convert_with_behavior_rate,
    convert_with_rules,
    legacy_scale_up_limit,
    legacy_stabilize,
    normalize_legacy,
    normalize_with_behavior,
    record_scale_event,
    replicas_change_in_period,
    scale_down_limit,
    scale_up_limit,
    seeded_state,
    stabilize_recommendation,
)
from autoscaler.core.spec import Behavior, PolicyType, ScalingPolicy, ScalingRules, SelectPolicy

NOW_S = 10_000.0
MIN_S = 60.0
Events = tuple[tuple[float, int], ...]


def rules(
    pods: int, pods_period_s: float, percent: int, percent_period_s: float, window_s: float
) -> ScalingRules:
    """``generateScalingRules``: Max select; a zero value leaves that policy out."""
    policies: list[ScalingPolicy] = []
    if pods:
        policies.append(ScalingPolicy(PolicyType.PODS, pods, pods_period_s))
    if percent:
        policies.append(ScalingPolicy(PolicyType.PERCENT, percent, percent_period_s))
    return ScalingRules(
        stabilization_window_s=window_s, select_policy=SelectPolicy.MAX, policies=tuple(policies)
    )


def uniform(raw: list[int], period_s: float, *, sign: int) -> Events:
    """``generateEventsUniformDistribution``: events centred in equal segments of the last ``period_s``
    (Go truncates the offset to whole nanoseconds; whole seconds here, equal for every case used)."""
    seg = period_s / len(raw)
    return tuple((NOW_S - (period_s - seg * (i + 1) + seg / 2), sign * c) for i, c in enumerate(raw))


def behavior(up: ScalingRules | None = None, down: ScalingRules | None = None) -> Behavior:
    b = Behavior()
    return Behavior(scale_up=up or b.scale_up, scale_down=down or b.scale_down)


class TestConvertDesiredReplicasWithRules:
    @pytest.mark.parametrize(
        ("current", "desired", "lo", "hi", "factor", "expected", "reason"),
        [
            pytest.param(5, 7, 3, 8, 8.0, 7, DESIRED_WITHIN_RANGE, id="within-range"),
            pytest.param(3, 1, 2, 8, 8.0, 2, TOO_FEW_REPLICAS, id="below-min"),
            pytest.param(1, 0, 0, 10, 8.0, 0, DESIRED_WITHIN_RANGE, id="zero-within-range-min-0"),
            pytest.param(20, 1000, 1, 10, 8.0, 10, TOO_MANY_REPLICAS, id="max-below-scale-up-limit"),
            pytest.param(3, 1000, 1, 2000, 8.0, 24, SCALE_UP_LIMIT, id="scale-up-limit-test-factor-8"),
            pytest.param(3, 1000, 1, 2000, 2.0, 6, SCALE_UP_LIMIT, id="scale-up-limit-production-factor-2"),
            pytest.param(1, 1000, 1, 2000, 2.0, 4, SCALE_UP_LIMIT, id="scale-up-limit-minimum-4"),
        ],
    )
    def test_case(
        self, current: int, desired: int, lo: int, hi: int, factor: float, expected: int, reason: str
    ) -> None:
        got = convert_with_rules(
            current=current, desired=desired, min_replicas=lo, max_replicas=hi, scale_up_limit_factor=factor
        )
        assert got == (expected, reason)

    def test_legacy_limit_is_truncated(self) -> None:
        assert legacy_scale_up_limit(3, factor=1.5) == 4
        assert legacy_scale_up_limit(5, factor=1.5) == 7


class TestCalculateScaleUpLimitWithScalingRules:
    def test_min_policy_pods_2_percent_50_from_1(self) -> None:
        r = ScalingRules(
            stabilization_window_s=300,
            select_policy=SelectPolicy.MIN,
            policies=(ScalingPolicy(PolicyType.PODS, 2, 60), ScalingPolicy(PolicyType.PERCENT, 50, 60)),
        )
        assert scale_up_limit(1, (), r, NOW_S) == 2

    def test_disabled_returns_current(self) -> None:
        r = ScalingRules(
            select_policy=SelectPolicy.DISABLED, policies=(ScalingPolicy(PolicyType.PODS, 9, 60),)
        )
        assert scale_up_limit(7, (), r, NOW_S) == 7


class TestCalculateScaleDownLimitWithBehaviors:
    def test_min_policy_pods_2_percent_50_from_5(self) -> None:
        r = ScalingRules(
            stabilization_window_s=300,
            select_policy=SelectPolicy.MIN,
            policies=(ScalingPolicy(PolicyType.PODS, 2, 60), ScalingPolicy(PolicyType.PERCENT, 50, 60)),
        )
        assert scale_down_limit(5, (), r, NOW_S) == 3

    def test_max_policy_picks_largest_change(self) -> None:
        r = rules(2, 60, 50, 60, 300)
        assert scale_down_limit(5, (), r, NOW_S) == 2  # trunc(5 × 0.5)


class TestNormalizeDesiredReplicas:
    """Legacy path (no behavior): the maximum over the 5-minute downscale window, with slot reuse."""

    @pytest.mark.parametrize(
        ("recs", "proposed", "expected", "log_length"),
        [
            pytest.param((), 5, 5, 1, id="empty-log"),
            pytest.param(((NOW_S - 2 * MIN_S, 4), (NOW_S - MIN_S, 5)), 3, 5, 3, id="stabilize"),
            pytest.param(((NOW_S - 2 * MIN_S, 1), (NOW_S - MIN_S, 2)), 3, 3, 3, id="no-stabilize"),
            pytest.param(
                ((NOW_S - 10 * MIN_S, 10), (NOW_S - 9 * MIN_S, 9)),
                3,
                3,
                2,
                id="no-stabilize-old-recommendations",
            ),
            pytest.param(
                (
                    (NOW_S - 10 * MIN_S, 10),
                    (NOW_S - MIN_S, 4),
                    (NOW_S - 2 * MIN_S, 5),
                    (NOW_S - 9 * MIN_S, 9),
                ),
                3,
                5,
                4,
                id="stabilize-old-recommendations",
            ),
        ],
    )
    def test_case(self, recs: Events, proposed: int, expected: int, log_length: int) -> None:
        got, state = legacy_stabilize(
            proposed=proposed, state=BehaviorState(recommendations=recs), now_s=NOW_S
        )
        assert got == expected
        assert len(state.recommendations) == log_length
        assert (NOW_S, proposed) in state.recommendations

    def test_normalize_legacy_reports_stabilized(self) -> None:
        state = BehaviorState(recommendations=((NOW_S - MIN_S, 5),))
        assert normalize_legacy(
            proposed=3, current=5, min_replicas=1, max_replicas=10, state=state, now_s=NOW_S
        )[:2] == (5, SCALE_DOWN_STABILIZED)


# (name, up events, down events, min, max, up rules, down rules, current, proposed, expected, reason)
SCALING_WITH_RULES = [
    ("prenormalized desired replicas within range", (), (), 3, 8, None, None, 5, 7, 7, DESIRED_WITHIN_RANGE),
    ("prenormalized desired replicas < minReplicas", (), (), 2, 8, None, None, 3, 1, 2, TOO_FEW_REPLICAS),
    ("desired within range when minReplicas is 0", (), (), 0, 10, None, None, 1, 0, 0, DESIRED_WITHIN_RANGE),
    ("maxReplicas is the limit because maxReplicas < scaleUpLimit", (), (), 1, 10, None, None, 20, 1000, 10,
     TOO_MANY_REPLICAS),
    ("desired replica count is more than the maximum replica count", (), (), 100, 150, None, None, 100, 1000,
     150, TOO_MANY_REPLICAS),
    ("scaleUpLimit < maxReplicas with user policies", (), (), 1, 2000, rules(0, 0, 1, 60, 0), None, 3, 1000, 4,
     SCALE_UP_LIMIT),
    ("scaleDownLimit > minReplicas with user policies", (), (), 3, 2000, None, rules(20, 60, 0, 0, 0), 1000, 3,
     980, SCALE_DOWN_LIMIT),
    ("scaleUp with default behavior", (), (), 1, 1000, None, None, 10, 50, 20, SCALE_UP_LIMIT),
    ("scaleUp with pods policy larger than percent policy", (), (), 1, 1000, rules(100, 60, 100, 60, 0), None,
     10, 500, 110, SCALE_UP_LIMIT),
    ("scaleUp with percent policy larger than pods policy", (), (), 1, 1000, rules(2, 60, 100, 60, 0), None,
     10, 500, 20, SCALE_UP_LIMIT),
    ("scaleUp MaxReplicas limitation with large pod policy", (), (), 1, 1000, rules(100, 60, 0, 0, 0), None,
     10, 50, 50, DESIRED_WITHIN_RANGE),
    ("scaleUp MaxReplicas limitation with large percent policy", (), (), 1, 1000, rules(10000, 60, 0, 0, 0),
     None, 10, 50, 50, DESIRED_WITHIN_RANGE),
    ("scaleUp with pod policy limitation", (), (), 1, 1000, rules(30, 60, 0, 0, 0), None, 10, 50, 40,
     SCALE_UP_LIMIT),
    ("scaleUp with percent policy limitation", (), (), 1, 1000, rules(0, 0, 200, 60, 0), None, 10, 50, 30,
     SCALE_UP_LIMIT),
    ("scaleDown with percent policy larger than pod policy", (), (), 1, 1000, None, rules(20, 60, 1, 60, 300),
     100, 2, 80, SCALE_DOWN_LIMIT),
    ("scaleDown with pod policy larger than percent policy", (), (), 1, 1000, None, rules(2, 60, 1, 60, 300),
     100, 2, 98, SCALE_DOWN_LIMIT),
    ("scaleDown MinReplicas=nil limitation with large pod policy", (), (), 1, 1000, None,
     rules(100, 60, 0, 0, 300), 10, 0, 1, TOO_FEW_REPLICAS),
    ("scaleDown MinReplicas limitation with large percent policy", (), (), 5, 1000, None,
     rules(0, 0, 100, 60, 300), 10, 2, 5, TOO_FEW_REPLICAS),
    ("scaleDown with pod policy limitation", (), (), 1, 1000, None, rules(5, 60, 0, 0, 300), 10, 2, 5,
     SCALE_DOWN_LIMIT),
    ("scaleDown with percent policy limitation", (), (), 1, 1000, None, rules(0, 0, 50, 60, 300), 10, 5, 5,
     DESIRED_WITHIN_RANGE),
    ("scaleUp MaxReplicas limitation with large pod policy and events", uniform([1, 5, 9], 120, sign=1), (),
     1, 200, rules(300, 60, 0, 0, 0), None, 100, 500, 200, TOO_MANY_REPLICAS),
    ("scaleUp MaxReplicas limitation with large percent policy and events", uniform([1, 5, 9], 120, sign=1),
     (), 1, 200, rules(0, 0, 10000, 60, 0), None, 100, 500, 200, TOO_MANY_REPLICAS),
    ("scaleUp currentReplicas limitation with a lot of recent scale up events", uniform([1, 5, 9], 120, sign=1),
     (), 1, 1000, rules(5, 120, 0, 0, 0), None, 100, 500, 100, SCALE_UP_LIMIT),
    ("scaleUp with pod policy and previous scale up events", uniform([1, 5, 9], 120, sign=1), (), 1, 1000,
     rules(150, 120, 0, 0, 0), None, 100, 500, 235, SCALE_UP_LIMIT),
    ("scaleUp with percent policy and previous scale up events", uniform([1, 5, 9], 120, sign=1), (), 1, 1000,
     rules(0, 0, 200, 120, 0), None, 100, 500, 255, SCALE_UP_LIMIT),
    ("scaleUp with percent policy and previous scale up and down events", uniform([4], 120, sign=1),
     uniform([2], 120, sign=-1), 1, 1000, rules(0, 0, 300, 300, 0), None, 6, 24, 16, SCALE_UP_LIMIT),
    ("scaleDown with default policy and previous events", (), uniform([1, 5, 9], 120, sign=-1), 1, 1000, None,
     None, 10, 5, 5, DESIRED_WITHIN_RANGE),
    ("scaleDown MinReplicas=nil limitation with large pod policy and previous events", (),
     uniform([1, 5, 9], 120, sign=-1), 1, 1000, None, rules(115, 120, 0, 0, 300), 100, 0, 1, TOO_FEW_REPLICAS),
    ("scaleDown MinReplicas limitation with large pod policy and previous events", (),
     uniform([1, 5, 9], 120, sign=-1), 5, 1000, None, rules(130, 120, 0, 0, 300), 100, 0, 5, TOO_FEW_REPLICAS),
    ("scaleDown MinReplicas limitation with large percent policy and previous events", (),
     uniform([1, 5, 9], 120, sign=-1), 5, 1000, None, rules(0, 0, 100, 120, 300), 100, 2, 5, TOO_FEW_REPLICAS),
    ("scaleDown with pod policy limitation and previous events", (), uniform([1, 5, 9], 120, sign=-1), 1, 1000,
     None, rules(5, 120, 0, 0, 300), 100, 2, 100, SCALE_DOWN_LIMIT),
    ("scaleDown with percent policy limitation and previous events", (), uniform([2, 4, 6], 120, sign=-1), 1,
     1000, None, rules(0, 0, 50, 120, 300), 100, 0, 56, SCALE_DOWN_LIMIT),
    ("scaleDown with percent policy and previous scale up and down events", uniform([2], 120, sign=1),
     uniform([4], 120, sign=-1), 1, 1000, None, rules(0, 0, 50, 180, 0), 10, 1, 6, SCALE_DOWN_LIMIT),
    ("scaleDown with previous events preventing further scale down", (), uniform([10, 10, 10], 120, sign=-1), 1,
     1000, None, rules(0, 0, 10, 120, 300), 100, 0, 100, SCALE_DOWN_LIMIT),
    ("scaleDown with previous events still allowing more scale down", (), uniform([10, 10, 10], 120, sign=-1),
     1, 1000, None, rules(0, 0, 1000, 120, 300), 10, 5, 5, DESIRED_WITHIN_RANGE),
    ("outdated flag for events for one behavior for up", uniform([8, 12, 9, 11], 120, sign=1), (), 1, 1000,
     rules(1000, 60, 0, 0, 0), None, 100, 200, 200, DESIRED_WITHIN_RANGE),
    ("events not outdated for two different policies for up", uniform([8, 12, 9, 11], 120, sign=1), (), 1,
     1000, rules(1000, 120, 100, 60, 0), None, 100, 200, 200, DESIRED_WITHIN_RANGE),
    ("events outdated for two different policies for up", uniform([8, 12, 9, 11], 120, sign=1), (), 1, 1000,
     rules(1000, 30, 100, 60, 0), None, 100, 200, 200, DESIRED_WITHIN_RANGE),
    ("outdated flag for events for one behavior for down", (), uniform([8, 12, 9, 11], 120, sign=-1), 1, 1000,
     None, rules(1000, 60, 0, 0, 300), 100, 5, 5, DESIRED_WITHIN_RANGE),
    ("events not outdated for two different policies for down", (), uniform([8, 12, 9, 11], 120, sign=-1), 1,
     1000, None, rules(1000, 120, 100, 60, 300), 100, 5, 5, DESIRED_WITHIN_RANGE),
    ("events outdated for two different policies for down", (), uniform([8, 12, 9, 11], 120, sign=-1), 1, 1000,
     None, rules(1000, 30, 100, 60, 300), 100, 5, 5, DESIRED_WITHIN_RANGE),
]  # fmt: skip


class TestScalingWithRules:
    @pytest.mark.parametrize(
        ("up_events", "down_events", "lo", "hi", "up", "down", "current", "proposed", "expected", "reason"),
        [pytest.param(*case[1:], id=case[0]) for case in SCALING_WITH_RULES],
    )
    def test_case(
        self,
        up_events: Events,
        down_events: Events,
        lo: int,
        hi: int,
        up: ScalingRules | None,
        down: ScalingRules | None,
        current: int,
        proposed: int,
        expected: int,
        reason: str,
    ) -> None:
        got = convert_with_behavior_rate(
            desired=proposed,
            current=current,
            min_replicas=lo,
            max_replicas=hi,
            behavior=behavior(up, down),
            events=up_events + down_events,
            now_s=NOW_S,
        )
        assert got == (expected, reason)


class TestStoreScaleEvents:
    """``storeScaleEvent`` + ``getReplicasChangePerPeriod(60)``, for both directions."""

    @pytest.mark.parametrize(
        ("prev", "scaling", "expected_change_60s", "new"),
        [
            pytest.param(
                ((NOW_S - 61, 7),), rules(10, 60, 100, 60, 0), 0, (5,), id="one-outdated-entry-replaced"
            ),
            pytest.param(
                ((NOW_S - 58, 7),), rules(10, 60, 100, 60, 0), 7, (7, 5), id="one-actual-entry-kept"
            ),
            pytest.param(
                ((NOW_S - 61, 7), (NOW_S - 59, 6)),
                rules(10, 60, 0, 0, 0),
                6,
                (5, 6),
                id="two-entries-one-replaced",
            ),
            pytest.param(
                ((NOW_S - 29, 8), (NOW_S - 59, 6), (NOW_S - 61, 7), (NOW_S - 61, 9)),
                rules(10, 60, 100, 30, 0),
                14,
                (8, 6, 7, 5),
                id="replace-one-entry-policies-with-different-periods",
            ),
            pytest.param(
                ((NOW_S - 58, 7), (NOW_S - 59, 6)),
                rules(10, 120, 100, 30, 0),
                13,
                (7, 6, 5),
                id="two-entries-actual",
            ),
            pytest.param((), rules(10, 60, 100, 60, 0), 0, (5,), id="empty-entries-two-policy-behavior"),
        ],
    )
    @pytest.mark.parametrize("sign", [1, -1], ids=["up", "down"])
    def test_case(
        self, prev: Events, scaling: ScalingRules, expected_change_60s: int, new: tuple[int, ...], sign: int
    ) -> None:
        events = tuple((t, sign * c) for t, c in prev)
        assert (
            replicas_change_in_period(events, period_s=60, now_s=NOW_S, scale_up=sign > 0)
            == expected_change_60s
        )
        b = Behavior(scale_up=scaling, scale_down=scaling)
        state = record_scale_event(BehaviorState(scale_events=events), NOW_S, sign * 5, behavior=b)
        assert tuple(abs(c) for _, c in state.scale_events) == new

    def test_without_behavior_appends(self) -> None:
        state = record_scale_event(BehaviorState(scale_events=((NOW_S - 61, 7),)), NOW_S, 5)
        assert state.scale_events == ((NOW_S - 61, 7), (NOW_S, 5))

    def test_zero_change_is_not_an_event(self) -> None:
        assert record_scale_event(BehaviorState(), NOW_S, 0) == BehaviorState()

    def test_up_and_down_slots_are_separate(self) -> None:
        b = Behavior(scale_up=rules(4, 15, 0, 0, 0), scale_down=rules(4, 15, 0, 0, 300))
        state = BehaviorState(scale_events=((NOW_S - 100, -3),))
        assert record_scale_event(state, NOW_S, 2, behavior=b).scale_events == ((NOW_S - 100, -3), (NOW_S, 2))


# (name, recs, current, proposed, expected, stored (None = unchecked), up window, down window)
WITH_BEHAVIOR = [
    ("empty recommendations for scaling down", (), 100, 5, 5, (5,), 0, 0),
    ("simple scale down stabilization", ((NOW_S - 120, 4), (NOW_S - 60, 5)), 100, 3, 5, (4, 5, 3), 0, 180),
    ("simple scale up stabilization", ((NOW_S - 120, 4), (NOW_S - 60, 5)), 1, 7, 4, (4, 5, 7), 300, 0),
    ("no scale down stabilization", ((NOW_S - 120, 1), (NOW_S - 60, 2)), 100, 3, 3, (1, 2, 3), 300, 0),
    ("no scale up stabilization", ((NOW_S - 120, 4), (NOW_S - 60, 5)), 1, 3, 3, (4, 5, 3), 0, 300),
    ("no scale down stabilization, reuse recommendation element", ((NOW_S - 600, 10), (NOW_S - 540, 9)), 100, 3,
     3, (10, 3), 0, 0),
    ("no scale up stabilization, reuse recommendation element", ((NOW_S - 600, 10), (NOW_S - 540, 9)), 1, 100,
     100, (10, 100), 0, 0),
    ("scale down stabilization, reuse one of obsolete recommendation element",
     ((NOW_S - 600, 10), (NOW_S - 60, 4), (NOW_S - 120, 5), (NOW_S - 540, 9)), 100, 3, 5, (10, 4, 5, 3), 0, 180),
    ("scale up stabilization, reuse one of obsolete recommendation element",
     ((NOW_S - 6000, 10), (NOW_S - 60, 6), (NOW_S - 120, 5), (NOW_S - 180, 9)), 1, 100, 5, (100, 6, 5, 9), 300,
     0),
    ("do not scale up when prenormalized rec goes down", ((NOW_S - 6000, 2), (NOW_S - 180, 3)), 2, 1, 2, None,
     300, 300),
    ("do not scale down when prenormalized rec goes up", ((NOW_S - 6000, 2), (NOW_S - 180, 1)), 2, 3, 2, None,
     300, 300),
]  # fmt: skip


class TestNormalizeDesiredReplicasWithBehavior:
    """``stabilizeRecommendationWithBehaviors`` with explicit up/down windows."""

    @pytest.mark.parametrize(
        ("recs", "current", "proposed", "expected", "stored", "up_w", "down_w"),
        [pytest.param(*case[1:], id=case[0]) for case in WITH_BEHAVIOR],
    )
    def test_case(
        self,
        recs: Events,
        current: int,
        proposed: int,
        expected: int,
        stored: tuple[int, ...] | None,
        up_w: float,
        down_w: float,
    ) -> None:
        b = Behavior(
            scale_up=ScalingRules(stabilization_window_s=up_w),
            scale_down=ScalingRules(stabilization_window_s=down_w),
        )
        got, _, state = stabilize_recommendation(
            proposed=proposed,
            current=current,
            behavior=b,
            state=BehaviorState(recommendations=recs),
            now_s=NOW_S,
        )
        assert got == expected
        if stored is not None:
            assert tuple(r for _, r in state.recommendations) == stored


class TestStabilizeDownscale:
    """TestStabilizeDownscale: recommendations 10 at −10 min and 4 at −1 min; metrics now want 2 of 4."""

    RECS: Events = ((NOW_S - 600, 10), (NOW_S - 60, 4))

    def test_legacy_path(self) -> None:
        got = normalize_legacy(
            proposed=2,
            current=4,
            min_replicas=1,
            max_replicas=5,
            state=BehaviorState(recommendations=self.RECS),
            now_s=NOW_S,
        )
        assert got[:2] == (4, SCALE_DOWN_STABILIZED)

    def test_behavior_path_default(self) -> None:
        got = normalize_with_behavior(
            proposed=2,
            current=4,
            min_replicas=1,
            max_replicas=5,
            behavior=Behavior(),
            state=BehaviorState(recommendations=self.RECS),
            now_s=NOW_S,
        )
        assert got[:2] == (4, SCALE_DOWN_STABILIZED)

    def test_initial_size_blocks_first_scale_down(self) -> None:
        """TestScaleDownStabilizeInitialSize: the seeded history holds the first sync at current."""
        got = normalize_with_behavior(
            proposed=2,
            current=5,
            min_replicas=1,
            max_replicas=10,
            behavior=Behavior(),
            state=seeded_state(5, NOW_S - 15),
            now_s=NOW_S,
        )
        assert got[:2] == (5, SCALE_DOWN_STABILIZED)


class TestNormalizeWithBehavior:
    @pytest.mark.parametrize(
        ("proposed", "current", "lo", "hi", "expected", "reason"),
        [
            pytest.param(50, 10, 1, 1000, 20, SCALE_UP_LIMIT, id="default-up-limit-100-percent"),
            pytest.param(3, 2, 1, 1000, 3, DESIRED_WITHIN_RANGE, id="within-range"),
            pytest.param(30, 10, 1, 15, 15, TOO_MANY_REPLICAS, id="max-bound"),
            pytest.param(5, 20, 1, 10, 10, TOO_MANY_REPLICAS, id="current-above-max-clamped"),
            pytest.param(0, 0, 2, 10, 2, TOO_FEW_REPLICAS, id="current-below-min-clamped"),
        ],
    )
    def test_case(self, proposed: int, current: int, lo: int, hi: int, expected: int, reason: str) -> None:
        b = Behavior(scale_up=Behavior().scale_up, scale_down=rules(1, 60, 0, 0, 0))
        got = normalize_with_behavior(
            proposed=proposed,
            current=current,
            min_replicas=lo,
            max_replicas=hi,
            behavior=b,
            state=BehaviorState(),
            now_s=NOW_S,
        )
        assert got[:2] == (expected, reason)

    def test_up_stabilized_reason(self) -> None:
        b = Behavior(scale_up=ScalingRules(stabilization_window_s=300))
        got = normalize_with_behavior(
            proposed=9,
            current=3,
            min_replicas=1,
            max_replicas=100,
            behavior=b,
            state=BehaviorState(recommendations=((NOW_S - 60, 4),)),
            now_s=NOW_S,
        )
        assert got[:2] == (4, SCALE_UP_STABILIZED)

    def test_rejects_bad_bounds(self) -> None:
        with pytest.raises(ValueError, match="min=5 max=2"):
            normalize_with_behavior(
                proposed=1,
                current=1,
                min_replicas=5,
                max_replicas=2,
                behavior=Behavior(),
                state=BehaviorState(),
                now_s=NOW_S,
            )


policy_st = st.builds(
    ScalingPolicy,
    st.sampled_from(list(PolicyType)),
    st.integers(1, 300),
    st.sampled_from([15.0, 60.0, 120.0]),
)
rules_st = st.builds(
    ScalingRules,
    st.sampled_from([None, 0.0, 60.0, 300.0]),
    st.sampled_from(list(SelectPolicy)),
    st.lists(policy_st, max_size=3).map(tuple),
)
events_st = st.lists(
    st.tuples(st.floats(NOW_S - 400, NOW_S - 1), st.integers(-20, 20).filter(lambda c: c != 0)), max_size=6
).map(tuple)
recs_st = st.lists(st.tuples(st.floats(NOW_S - 900, NOW_S - 1), st.integers(0, 200)), max_size=6).map(tuple)


@given(
    proposed=st.integers(0, 500),
    current=st.integers(0, 200),
    lo=st.integers(0, 10),
    span=st.integers(0, 200),
    up=rules_st,
    down=rules_st,
    events=events_st,
    recs=recs_st,
)
def test_properties_bounds_and_direction(
    proposed: int,
    current: int,
    lo: int,
    span: int,
    up: ScalingRules,
    down: ScalingRules,
    events: Events,
    recs: Events,
) -> None:
    """Always inside [min, max]; never moves against the proposal unless forced by the bounds."""
    hi = lo + span
    state = BehaviorState(recommendations=recs, scale_events=events)
    got, _, new_state = normalize_with_behavior(
        proposed=proposed,
        current=current,
        min_replicas=lo,
        max_replicas=hi,
        behavior=Behavior(up, down),
        state=state,
        now_s=NOW_S,
    )
    assert lo <= got <= hi
    if lo <= current <= hi:
        if proposed >= current:
            assert current <= got <= min(proposed, hi)
        else:
            assert max(proposed, lo) <= got <= current
    assert len(new_state.recommendations) <= len(recs) + 1
