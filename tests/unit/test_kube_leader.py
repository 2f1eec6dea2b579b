"""Lease-based leader election against the emulator (real HTTP, official client), with controllable clocks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes import client as k8s

from autoscaler.kube import KubeClient, KubeSettings
from autoscaler.leader import LeaderElector, LeaseConfig
from workers.local.kube_emulator import KubeEmulator

NS = "pdscale-system"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def emu() -> Iterator[KubeEmulator]:
    with KubeEmulator() as e:
        yield e


@pytest.fixture(scope="module")
def shared_kube(emu: KubeEmulator) -> KubeClient:
    cfg = k8s.Configuration()
    cfg.host = emu.url
    cfg.retries = False
    return KubeClient(k8s.ApiClient(cfg), KubeSettings(timeout_s=1.0))


@pytest.fixture
def kube(emu: KubeEmulator, shared_kube: KubeClient) -> KubeClient:
    emu.clear_faults()
    return shared_kube


def pair(kube: KubeClient, lease: str, clock: FakeClock, duration_s: float = 10.0) -> tuple[LeaderElector, ...]:
    return tuple(
        LeaderElector(kube, LeaseConfig(NS, lease, ident, lease_duration_s=duration_s, safety_margin_s=1.0),
                      monotonic=clock)
        for ident in ("a", "b")
    )


def lease(emu: KubeEmulator, name: str) -> dict:
    obj = emu.get("coordination.k8s.io/v1/leases", NS, name)
    assert obj is not None
    return obj["spec"]


def test_first_candidate_creates_and_holds(emu: KubeEmulator, kube: KubeClient) -> None:
    clock = FakeClock()
    a, b = pair(kube, "create", clock)
    assert a.step() is True
    assert b.step() is False
    spec = lease(emu, "create")
    assert spec["holderIdentity"] == "a"
    assert spec["leaseDurationSeconds"] == 10
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] and spec["renewTime"]
    clock.t += 5
    assert a.step() is True  # renew
    assert b.step() is False
    assert lease(emu, "create")["acquireTime"] == spec["acquireTime"]
    assert lease(emu, "create")["renewTime"] != spec["renewTime"]


@pytest.mark.parametrize(
    ("advance_s", "b_leads"), [(9.0, False), (10.5, True)], ids=["before-expiry", "after-expiry"]
)
def test_takeover_only_after_lease_duration(emu: KubeEmulator, kube: KubeClient, advance_s: float,
                                            b_leads: bool) -> None:
    clock = FakeClock()
    name = f"expire-{advance_s}"
    a, b = pair(kube, name, clock)
    assert a.step()
    assert not b.step()  # b observes a's record now
    clock.t += advance_s  # a is dead: no more renewals
    assert b.step() is b_leads
    spec = lease(emu, name)
    assert spec["holderIdentity"] == ("b" if b_leads else "a")
    assert spec["leaseTransitions"] == (1 if b_leads else 0)
    # the dead leader's own view: it stopped acting before b could take over (safety margin)
    assert a.is_leader() is False or advance_s < 9.0


def test_leader_stops_acting_before_successor_can_start(kube: KubeClient) -> None:
    clock = FakeClock()
    a, _ = pair(kube, "margin", clock)
    assert a.step()
    clock.t += 8.9
    assert a.is_leader()
    clock.t += 0.2  # 9.1 s > duration 10 - margin 1
    assert not a.is_leader()


def test_release_hands_over_at_once(emu: KubeEmulator, kube: KubeClient) -> None:
    clock = FakeClock()
    a, b = pair(kube, "release", clock)
    assert a.step()
    assert not b.step()
    a.release()
    assert not a.is_leader()
    assert lease(emu, "release").get("holderIdentity") is None
    assert b.step()  # no waiting for expiry
    assert lease(emu, "release")["leaseTransitions"] == 1


def test_lost_race_is_a_409_and_a_follower(emu: KubeEmulator, kube: KubeClient) -> None:
    clock = FakeClock()
    a, b = pair(kube, "race", clock)
    assert a.step()
    assert not b.step()
    clock.t += 11
    emu.add_fault("PUT", r"/leases/race$", status=409)
    assert b.step() is False
    assert "409" in (b.last_error or "")
    assert b.step() is True


def test_api_errors_keep_leadership_only_within_lease(emu: KubeEmulator, kube: KubeClient) -> None:
    clock = FakeClock()
    a, _ = pair(kube, "flaky", clock)
    assert a.step()
    emu.add_fault("GET", r"/leases/flaky$", status=500, times=100)
    clock.t += 5
    assert a.step() is True  # renewal failed, but the lease is still surely ours
    clock.t += 5
    assert a.step() is False
    emu.clear_faults()


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ab"), st.floats(0.0, 6.0)), min_size=1, max_size=12))
def test_never_two_leaders(shared_kube: KubeClient, steps: list[tuple[str, float]]) -> None:
    """Whatever the interleaving and delays, at no instant do both candidates consider themselves leader."""
    clock = FakeClock()
    kube = shared_kube
    name = f"prop-{uuid.uuid4().hex[:10]}"
    electors = dict(zip("ab", pair(kube, name, clock), strict=True))
    for who, advance in steps:
        clock.t += advance
        electors[who].step()
        assert not (electors["a"].is_leader() and electors["b"].is_leader())
