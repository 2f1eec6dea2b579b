"""sim.router.PoolLoads: the least-outstanding-tokens pick over a plain list, kept in step with the pods' states."""

from __future__ import annotations

from autoscaler.core.latency import LatencyProfile, PolyModel
from autoscaler.core.types import Pool
from sim.router import PoolLoads, Router
from sim.scheduler import InstanceScheduler

PROFILE = LatencyProfile("test", "unit test", PolyModel(0.01, 1e-4, 0.0, 0.005, 1e-6, 1e-4), 1, 1000, 4000, 8, 256)


def instances(n: int) -> list[InstanceScheduler]:
    return [InstanceScheduler("decode", PROFILE) for _ in range(n)]


def add_load(inst: InstanceScheduler, tokens: int) -> None:
    inst.routing_loads[inst.routing_slot] += tokens  # what the engine does at dispatch and finish


def test_least_loaded_takes_only_pods_taking_work_oldest_on_ties() -> None:
    loads = PoolLoads()
    a, b, c = instances(3)
    loads.add(a, taking_work=True)
    loads.add(b, taking_work=False)  # starting
    loads.add(c, taking_work=True)
    assert loads.least_loaded() is a  # a tie between a and c goes to the older pod
    add_load(a, 50)
    assert loads.least_loaded() is c
    add_load(c, 80)
    assert loads.least_loaded() is a  # b (0 tokens) is starting: not a candidate
    loads.set_taking_work(b, True)
    assert loads.least_loaded() is b
    add_load(b, 500)
    loads.set_taking_work(b, False)  # draining: its load is kept, it takes no new work
    add_load(b, -100)
    assert loads.load_of(b) == 400 and loads.least_loaded() is a
    loads.set_taking_work(b, True)  # the drain is cancelled
    assert loads.load_of(b) == 400
    loads.set_taking_work(a, False)
    loads.set_taking_work(c, False)
    assert loads.least_loaded() is b
    loads.set_taking_work(b, False)
    assert loads.least_loaded() is None


def test_remove_moves_later_pods_up_and_keeps_their_loads() -> None:
    loads = PoolLoads()
    pods = instances(4)
    for i, inst in enumerate(pods):
        loads.add(inst, taking_work=True)
        add_load(inst, 100 - 10 * i)
    loads.set_taking_work(pods[1], False)
    add_load(pods[1], -90)  # drained to 0 tokens, then gone
    loads.remove(pods[1])
    assert [loads.load_of(p) for p in (pods[0], pods[2], pods[3])] == [100, 80, 70]
    assert [p.routing_slot for p in (pods[0], pods[2], pods[3])] == [0, 1, 2]
    add_load(pods[3], 20)
    assert loads.least_loaded() is pods[2]
    assert PoolLoads().least_loaded() is None


def test_router_pickers() -> None:
    loads = PoolLoads()
    ready = instances(3)
    for inst in ready:
        loads.add(inst, taking_work=True)
    add_load(ready[0], 10)
    for policy in ("least-outstanding-tokens", "central-fcfs"):
        assert Router(policy).picker(Pool.DECODE, ready, loads)(0.0) is ready[1]
    rr = Router("round-robin").picker(Pool.DECODE, ready, loads)
    assert [rr(0.0) for _ in range(4)] == [ready[0], ready[1], ready[2], ready[0]]
    ready[0].inbound_kv_tokens = 5  # least-kv: KV in use plus inbound transfers
    assert Router("least-kv").picker(Pool.DECODE, ready, loads)(0.0) is ready[1]
    assert Router("least-kv").picker(Pool.DECODE, [], loads)(0.0) is None
