"""``workers.local.net.free_port``: ports for servers that bind them later (a vLLM pod binds its NIXL side channel
20-60 s after it was given the port) must not be ones an outgoing connection or a bind-to-0 can take meanwhile."""

from __future__ import annotations

import socket

import pytest

from workers.local import net
from workers.local.net import LOOPBACK, LOWEST_PORT, ephemeral_port_range, free_port


def test_ports_are_below_the_ephemeral_range_bindable_and_never_handed_out_twice() -> None:
    low, _ = ephemeral_port_range()
    ports = [free_port() for _ in range(300)]
    assert all(LOWEST_PORT <= p < low for p in ports), [p for p in ports if not LOWEST_PORT <= p < low]
    assert len(set(ports)) == len(ports)
    with socket.socket() as sock:
        sock.bind((LOOPBACK, ports[-1]))  # free, as promised


def test_a_bind_to_zero_never_lands_on_a_port_handed_out() -> None:
    """What the kernel gives an outgoing connection or another server's bind-to-0 lies in the ephemeral range."""
    handed = {free_port() for _ in range(50)}
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind((LOOPBACK, 0))
            assert sock.getsockname()[1] not in handed


def test_falls_back_to_the_kernel_when_the_range_leaves_no_room(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel_low, kernel_high = ephemeral_port_range()
    monkeypatch.setattr(net, "ephemeral_port_range", lambda: (LOWEST_PORT + 10, 60999))
    assert kernel_low <= free_port() <= kernel_high  # the kernel's bind-to-0 choice


def test_unreadable_range_means_linux_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(net, "EPHEMERAL_RANGE_FILE", "/nonexistent/ip_local_port_range")
    assert ephemeral_port_range() == (32768, 60999)


def test_a_port_pair_reserves_both_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    """``free_port_pair`` hands out P and P + 1 (the launcher's decode server binds P + 1 later): neither comes back
    from ``free_port`` afterwards, and a taken P + 1 is skipped."""
    pairs = [net.free_port_pair() for _ in range(40)]
    later = {free_port() for _ in range(300)}
    reserved = {p for port in pairs for p in (port, port + 1)}
    assert len(reserved) == 2 * len(pairs) and not reserved & later
    taken = socket.socket()
    taken.bind((LOOPBACK, 0))
    blocked = taken.getsockname()[1]
    good = next(p for p in range(20000, 30000) if net._unclaimed(p + 1))
    candidates = iter([blocked - 1, blocked - 1, good])
    monkeypatch.setattr(net, "free_port", lambda: next(candidates))
    with taken:
        assert net.free_port_pair() == good  # blocked - 1 has its next port taken, twice
