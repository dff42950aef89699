"""What the simulated market does by itself as time passes: boots finish, competing renters come and go,
hosts fail and come back, zombies wake, destroyed ghosts fade.

`advance(market, now, dt)` applies one step; the server's ticker thread calls it a few times a second, tests
call it (or the admin `tick` route) directly. Random draws come from the market's seeded generator, and every
rate is a knob, zero by default, so a test sees only the events it injects. Holds the market's lock only
through the caller.
"""

from __future__ import annotations

from vastfleet.sim.disruptions import host_offline, host_online
from vastfleet.sim.entities import Phase
from vastfleet.sim.model import Market


def advance(market: Market, now: float, dt: float) -> None:
    _debt(market, now)
    _finish_boots(market, now)
    _expire_claims(market, now)
    _hosts_back(market, now)
    _wake_zombies(market, now)
    _fade_ghosts(market, now)
    if dt > 0:
        _bid_arrivals(market, now, dt)
        _ondemand_arrivals(market, now, dt)
        _outages(market, now, dt)


def _debt(market: Market, now: float) -> None:
    """Below zero credit vast deletes the account's instances, disks and all."""
    if market.instances and market.balance() < 0:
        for iid in sorted(market.instances):
            market.destroy(iid)


def _finish_boots(market: Market, now: float) -> None:
    for inst in list(market.instances.values()):
        if inst.phase == Phase.loading and inst.boot_at is not None and inst.boot_at <= now:
            market.set_phase(inst, Phase.running, "success, running")


def _expire_claims(market: Market, now: float) -> None:
    done = [c for c in market.claims.values() if c.until is not None and c.until <= now]
    for claim in done:
        del market.claims[claim.id]
    for machine_id in {c.machine_id for c in done}:
        market.resolve(machine_id)


def _hosts_back(market: Market, now: float) -> None:
    for host in market.hosts.values():
        if not host.online and host.offline_until is not None and host.offline_until <= now:
            host_online(market, host.id)


def _wake_zombies(market: Market, now: float) -> None:
    for inst in list(market.instances.values()):
        if inst.zombie_at is not None and inst.zombie_at <= now:
            inst.zombie_at = None
            if inst.phase == Phase.scheduling and market.quirks["zombie"]:
                market.drop_claims(inst.machine_id, inst.gpu_ids)


def _fade_ghosts(market: Market, now: float) -> None:
    for iid, ghost in list(market.ghosts.items()):
        if ghost.destroyed_at is None or ghost.destroyed_at + market.knobs.ghost_seconds <= now:
            del market.ghosts[iid]


def _pick_machine(market: Market, prefer_ours: bool) -> int | None:
    online = [m.id for m in market.machines.values() if market.hosts[m.host_id].online]
    if not online:
        return None
    ours = sorted({i.machine_id for i in market.instances.values() if i.is_bid and i.machine_id in online})
    if prefer_ours and ours and market.rng.random() < 0.5:
        return market.rng.choice(ours)
    return market.rng.choice(sorted(online))


def _bid_arrivals(market: Market, now: float, dt: float) -> None:
    rate = market.knobs.bid_arrival_rate
    if rate <= 0 or market.rng.random() >= min(1.0, rate * dt):
        return
    machine_id = _pick_machine(market, prefer_ours=True)
    if machine_id is None:
        return
    machine = market.machines[machine_id]
    n = market.rng.choice(market.bundle_sizes(machine, machine.num_gpus))
    gpus = tuple(sorted(market.rng.sample(range(machine.num_gpus), n)))
    price = machine.min_bid_per_gpu * market.rng.uniform(0.8, 2.5)
    duration = market.rng.expovariate(1.0 / max(1.0, market.knobs.bid_duration))
    market.add_claim(machine_id, gpus, ondemand=False, price_per_gpu=price, duration=duration)


def _ondemand_arrivals(market: Market, now: float, dt: float) -> None:
    rate = market.knobs.ondemand_arrival_rate
    if rate <= 0 or market.rng.random() >= min(1.0, rate * dt):
        return
    machine_id = _pick_machine(market, prefer_ours=False)
    if machine_id is None:
        return
    machine = market.machines[machine_id]
    order, _ = market.usable(machine, bid=False)
    if not order:
        return
    n = market.rng.choice(market.bundle_sizes(machine, len(order)))
    ok, gpus, _ = market.offer_terms(machine, n, bid=False)
    if ok:
        duration = market.rng.expovariate(1.0 / max(1.0, market.knobs.ondemand_duration))
        market.add_claim(
            machine_id, gpus, ondemand=True, price_per_gpu=machine.dph_per_gpu, duration=duration
        )


def _outages(market: Market, now: float, dt: float) -> None:
    scale = market.knobs.outage_scale
    if scale <= 0:
        return
    for host in sorted(market.hosts.values(), key=lambda h: h.id):
        if host.online and market.rng.random() < scale * (1.0 - host.reliability) * dt / 3600.0:
            duration = market.rng.expovariate(1.0 / max(1.0, market.knobs.outage_duration))
            host_offline(market, host.id, duration)
