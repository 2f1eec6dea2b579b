"""Lease-based leader election (coordination.k8s.io/v1), so two controller replicas never both write.

The algorithm is client-go's ``tools/leaderelection`` in small: a candidate may take the Lease when it does not
exist, when it already holds it, or when the holder has not renewed it for ``leaseDurationSeconds`` *as observed
by this candidate's own clock* (it remembers when it last saw the record change, so clock skew between machines
does not matter). Every write carries the resourceVersion it read, so of two candidates racing for an expired
Lease exactly one wins; the other gets 409 Conflict and stays a follower. A leader counts itself leader only
until ``renew time + lease duration - safety margin`` on its own monotonic clock, so it stops writing before a
successor can start. On shutdown it releases the Lease (holder cleared) so a successor takes over at once.
``LeaseFence`` applies that deadline to every other write the controller makes (scale, status, events, pods).
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from autoscaler.kube import FencedError, KubeClient, api_error_text

log = logging.getLogger("pdscale.leader")


def _micro_now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str = "pdscale-controller"
    identity: str = ""
    lease_duration_s: float = 15.0
    retry_period_s: float = 2.0  # how often a follower tries, and a leader renews
    safety_margin_s: float = 2.0  # a leader stops acting this long before its lease could be taken


class LeaderElector:
    """Call ``step()`` every ``retry_period_s``; ``is_leader()`` says whether writes are allowed right now."""

    def __init__(
        self,
        kube: KubeClient,
        config: LeaseConfig,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime.datetime] = _micro_now,
    ) -> None:
        if not config.identity:
            raise ValueError("leader election needs a non-empty identity")
        self.kube = kube
        self.config = config
        self.monotonic = monotonic
        self.wall = wall
        self._valid_until = float("-inf")  # monotonic time until which we may act as leader
        self._observed: tuple[Any, ...] | None = None  # (holder, renewTime, transitions) last seen
        self._observed_at = float("-inf")
        self.transitions_seen = 0
        self.last_error: str | None = None

    @property
    def identity(self) -> str:
        return self.config.identity

    def is_leader(self) -> bool:
        return self.monotonic() < self._valid_until

    def remaining_s(self) -> float:
        """Seconds this replica may still act as leader (negative when it may not)."""
        return self._valid_until - self.monotonic()

    def _lease_body(self, holder: str | None, acquire: str | None, renew: str | None, transitions: int,
                    resource_version: str | None, duration_s: float | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.config.name, "namespace": self.config.namespace}
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": max(1, round(duration_s or self.config.lease_duration_s)),
                "acquireTime": acquire,
                "renewTime": renew,
                "leaseTransitions": transitions,
            },
        }

    def _now_str(self) -> str:
        return self.wall().strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def step(self) -> bool:
        """Try to acquire or renew once. Returns whether this candidate is leader afterwards."""
        start = self.monotonic()
        ns, name, t = self.config.namespace, self.config.name, self.kube.timeout
        api = self.kube.coordination
        try:
            try:
                lease = api.read_namespaced_lease(name, ns, _request_timeout=t)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                now = self._now_str()
                api.create_namespaced_lease(ns, self._lease_body(self.identity, now, now, 0, None),  # type: ignore[arg-type]
                                            _request_timeout=t)
                self._became_leader(start, acquired=True)
                return True
            spec = lease.spec
            holder = spec.holder_identity if spec else None
            transitions = int(spec.lease_transitions or 0) if spec else 0
            duration_s = float(spec.lease_duration_seconds or self.config.lease_duration_s) if spec else 0.0
            record = (holder, spec.renew_time if spec else None, transitions)
            if record != self._observed:
                self._observed, self._observed_at = record, start
            mine = holder == self.identity
            expired = not holder or start >= self._observed_at + duration_s
            if not mine and not expired:
                self._valid_until = float("-inf")
                self.last_error = None
                return False
            now = self._now_str()
            acquire = spec.acquire_time if mine and spec and spec.acquire_time else None
            acquire_str = acquire.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if isinstance(acquire, datetime.datetime) \
                else (acquire or now)
            body = self._lease_body(self.identity, acquire_str, now, transitions if mine else transitions + 1,
                                    lease.metadata.resource_version if lease.metadata else None)
            api.replace_namespaced_lease(name, ns, body, _request_timeout=t)  # type: ignore[arg-type]
            self._became_leader(start, acquired=not mine)
            return True
        except ApiException as exc:
            if exc.status == 409:  # someone else wrote first: they lead
                log.info("lease %s/%s: lost a race (409)", ns, name)
            self.last_error = api_error_text(exc)
        except Exception as exc:  # timeouts, connection errors
            self.last_error = api_error_text(exc)
        if self.last_error:
            log.warning("lease %s/%s: %s", ns, name, self.last_error)
        # Keep acting only while the lease we last renewed is surely still ours.
        return self.is_leader()

    def _became_leader(self, start: float, *, acquired: bool) -> None:
        was = self.is_leader()
        self._valid_until = start + self.config.lease_duration_s - self.config.safety_margin_s
        self.last_error = None
        if acquired or not was:
            self.transitions_seen += 1
            log.info("became leader", extra={"identity": self.identity, "lease": self.config.name})

    def release(self) -> None:
        """Give the Lease up (holder cleared, 1 s duration) if we hold it, so a successor takes over at once."""
        if not self.is_leader():
            return
        self._valid_until = float("-inf")
        ns, name, t = self.config.namespace, self.config.name, self.kube.timeout
        try:
            lease = self.kube.coordination.read_namespaced_lease(name, ns, _request_timeout=t)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            now = self._now_str()
            body = self._lease_body(None, None, now, int(lease.spec.lease_transitions or 0),
                                    lease.metadata.resource_version if lease.metadata else None, duration_s=1)
            self.kube.coordination.replace_namespaced_lease(name, ns, body, _request_timeout=t)  # type: ignore[arg-type]
            log.info("released leadership", extra={"identity": self.identity, "lease": name})
        except Exception as exc:
            log.warning("releasing lease %s/%s failed: %s", ns, name, api_error_text(exc))


class LeaseFence:
    """``kube.WriteFence`` for a Lease holder: a write may be sent only if its timeout runs out before the
    leadership this replica can prove does (``renew start + lease duration - safety margin``, on its own monotonic
    clock). A write that could still be in flight when a successor may start is not sent; one that the server
    applies after the client gave up is refused by the resourceVersion it carries if anyone wrote in between."""

    def __init__(self, elector: LeaderElector) -> None:
        self.elector = elector

    def check(self, what: str, timeout_s: float) -> None:
        left = self.elector.remaining_s()
        if left >= timeout_s:
            return
        why = (
            "this replica does not hold the Lease"
            if left <= 0
            else f"the Lease is surely held {left:.2f} s more, less than the call's {timeout_s:g} s timeout"
        )
        raise FencedError(f"{what} not written: {why}")
