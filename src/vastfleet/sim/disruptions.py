"""Disruptions of the market: rivals that pause an instance, offers taken by another buyer, hosts that go
offline and come back. Used by the admin API (injected on purpose) and by `events.py` (drawn at random).
Each is a small function over the `Market`; the priority rules themselves stay in `model.py`.
"""

from __future__ import annotations

from vastfleet.sim.entities import Claim, Instance, Phase, SimError
from vastfleet.sim.model import Market


def preempt(
    market: Market,
    instance_id: int,
    *,
    price: float | None = None,
    ondemand: bool = False,
    duration: float | None = None,
) -> Claim:
    inst = market.get(instance_id)
    if not inst.is_bid and not ondemand:
        raise SimError(
            409, "not_interruptible", f"Instance {instance_id} is on demand: bids cannot pause it."
        )
    pg = inst.price_per_gpu() * 2 + 0.01 if price is None else price / len(inst.gpu_ids)
    return market.add_claim(
        inst.machine_id, inst.gpu_ids, ondemand=ondemand, price_per_gpu=pg, duration=duration
    )


def resume(market: Market, instance_id: int) -> Instance:
    inst = market.get(instance_id)
    market.drop_claims(inst.machine_id, inst.gpu_ids)
    return inst


def take_offer(market: Market, ask_id: int, duration: float | None = None) -> Claim:
    key = market.asks.get(ask_id)
    if key is None:
        raise SimError(404, "no_such_ask", f"Offer {ask_id} is no longer available.")
    machine = market.machines[key[0]]
    ok, gpus, _ = market.offer_terms(machine, key[1], bid=False)
    if not ok:
        raise SimError(409, "unavailable", f"Offer {ask_id} has no free GPUs.")
    return market.add_claim(
        machine.id, gpus, ondemand=True, price_per_gpu=machine.dph_per_gpu, duration=duration
    )


def host_offline(market: Market, host_id: int, duration: float | None = None) -> None:
    host = market.host(host_id)
    host.online = False
    host.offline_until = None if duration is None else market.clock() + duration
    for inst in list(market.instances.values()):
        if inst.host_id == host_id and inst.phase != Phase.offline:
            market.set_phase(inst, Phase.offline, "Host offline")
    for c in market.claims.values():
        if market.machines[c.machine_id].host_id == host_id:
            c.holding = False
    for m in market.machines.values():
        if m.host_id == host_id:
            market.retire_asks(m.id)


def host_online(market: Market, host_id: int) -> None:
    host = market.host(host_id)
    host.online = True
    host.offline_until = None
    for inst in list(market.instances.values()):
        if inst.host_id == host_id and inst.phase == Phase.offline:
            if inst.intended == "running":
                market.set_phase(inst, Phase.scheduling, "Scheduling: host back online")
            else:
                market.set_phase(inst, Phase.stopped, "Stopped")
    for m in market.machines.values():
        if m.host_id == host_id:
            market.resolve(m.id)
