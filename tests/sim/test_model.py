"""The market's rules on a fake clock: offers, renting, priorities, pauses, outages, quirks, billing."""

from __future__ import annotations

import pytest

from tests.sim.factories import body, make_market, offer_on
from vastfleet.sim import disruptions
from vastfleet.sim.catalog import CORE_MODELS, build_market
from vastfleet.sim.entities import Phase, SimError
from vastfleet.sim.events import advance
from vastfleet.sim.fields import instance_row


def test_same_seed_same_market_and_a_choice_per_core_model() -> None:
    assert build_market(7, 40) == build_market(7, 40)
    assert build_market(7, 40) != build_market(8, 40)
    _, machines = build_market(7, 40)
    for name in CORE_MODELS:
        assert sum(m.gpu_name == name for m in machines) >= 2, name
    for m in machines:
        assert 0.3 * m.dph_per_gpu <= m.min_bid_per_gpu <= 0.6 * m.dph_per_gpu + 1e-9


def test_on_demand_create_runs_and_the_offer_is_gone() -> None:
    market, _, runner = make_market()
    ask, machine, n, _ = offer_on(market)
    inst = market.create(ask, body())
    assert inst.phase == Phase.running and not inst.is_bid
    assert inst.price == pytest.approx(machine.dph_per_gpu * n, abs=1e-4)
    assert ("start", inst.id) in runner.calls
    with pytest.raises(SimError) as err:
        market.create(ask, body())
    assert err.value.status == 404 and err.value.code == "no_such_ask"


def test_image_loading_then_running() -> None:
    market, clock, runner = make_market(boot_delay=30)
    ask, *_ = offer_on(market)
    inst = market.create(ask, body())
    assert inst.phase == Phase.loading and runner.calls == []
    clock.advance(29)
    advance(market, clock(), 29)
    assert inst.phase == Phase.loading
    clock.advance(2)
    advance(market, clock(), 2)
    assert inst.phase == Phase.running and runner.calls == [("start", inst.id)]


def test_bid_below_min_bid_is_created_stopped_or_refused() -> None:
    market, _, runner = make_market()
    ask, _, _, min_bid = offer_on(market, bid=True)
    inst = market.create(ask, body(price=min_bid * 0.5))
    assert inst.phase == Phase.stopped and inst.intended == "stopped" and runner.calls == []
    market.set_state(inst.id, "running")  # started, an underbid still never runs, even on idle GPUs
    assert inst.phase == Phase.scheduling and "minimum" in inst.status_msg
    market.change_bid(inst.id, min_bid)
    assert inst.phase == Phase.running
    strict, _, _ = make_market(quirks={"insufficient_bid_stopped": False})
    ask, _, _, min_bid = offer_on(strict, bid=True)
    with pytest.raises(SimError) as err:
        strict.create(ask, body(price=min_bid * 0.5))
    assert err.value.code == "insufficient_bid" and not strict.instances


def test_a_higher_bid_pauses_at_once_and_the_instance_resumes_when_it_leaves() -> None:
    market, clock, runner = make_market()
    ask, machine, _, min_bid = offer_on(market, bid=True)
    inst = market.create(ask, body(price=min_bid))
    assert inst.phase == Phase.running and inst.is_bid
    market.add_claim(
        machine.id, inst.gpu_ids, ondemand=False, price_per_gpu=inst.price_per_gpu() + 0.01, duration=60
    )
    assert inst.phase == Phase.scheduling and inst.intended == "running"
    assert runner.calls[-1] == ("kill", inst.id)
    clock.advance(61)
    advance(market, clock(), 61)
    assert inst.phase == Phase.running and inst.starts == 2


def test_the_incumbent_keeps_its_gpus_on_a_tie() -> None:
    market, _, _ = make_market()
    ask, machine, _, min_bid = offer_on(market, bid=True)
    inst = market.create(ask, body(price=min_bid))
    claim = market.add_claim(
        machine.id, inst.gpu_ids, ondemand=False, price_per_gpu=inst.price_per_gpu(), duration=None
    )
    assert inst.phase == Phase.running and not claim.holding


def test_on_demand_beats_any_bid() -> None:
    market, _, _ = make_market()
    ask, machine, _, _ = offer_on(market, min_gpus=1)
    bid_inst = market.create(ask, body(price=500.0))
    # the on-demand search still lists the GPUs a bid holds
    asks = [a for a, m, n, _ in market.open_offers(bid=False) if m.id == machine.id and n == machine.num_gpus]
    assert asks
    od = market.create(asks[0], body())
    assert od.phase == Phase.running and bid_inst.phase == Phase.scheduling


def test_change_bid_wins_back_the_gpus() -> None:
    market, _, _ = make_market()
    ask, machine, _, min_bid = offer_on(market, bid=True)
    inst = market.create(ask, body(price=min_bid))
    market.add_claim(
        machine.id, inst.gpu_ids, ondemand=False, price_per_gpu=inst.price_per_gpu() * 3, duration=None
    )
    assert inst.phase == Phase.scheduling
    market.change_bid(inst.id, inst.price * 2)
    assert inst.phase == Phase.scheduling
    market.change_bid(inst.id, None)  # no price: the winning bid
    assert inst.phase == Phase.running
    with pytest.raises(SimError):
        od = market.create(offer_on(market)[0], body())
        market.change_bid(od.id, 1.0)


def test_scheduling_trap_a_stopped_instance_finds_its_gpu_taken() -> None:
    market, _, _ = make_market()
    ask, machine, n, _ = offer_on(market)
    inst = market.create(ask, body())
    market.set_state(inst.id, "stopped")
    assert inst.phase == Phase.stopped and not market.holders(machine.id)
    rival_ask = next(a for a, m, k, _ in market.open_offers(bid=False) if m.id == machine.id and k == n)
    claim = disruptions.take_offer(market, rival_ask)
    assert set(claim.gpu_ids) & set(inst.gpu_ids)
    market.set_state(inst.id, "running")
    assert inst.phase == Phase.scheduling
    market.drop_claims(machine.id)
    assert inst.phase == Phase.running


def test_host_outage_takes_instances_and_offers_offline_and_back() -> None:
    market, clock, runner = make_market()
    ask, machine, _, _ = offer_on(market)
    inst = market.create(ask, body())
    disruptions.host_offline(market, machine.host_id, duration=100)
    assert inst.phase == Phase.offline and ("kill", inst.id) in runner.calls
    assert all(m.id != machine.id for _, m, _, _ in market.open_offers(bid=False))
    clock.advance(101)
    advance(market, clock(), 101)
    assert inst.phase == Phase.running and inst.starts == 2


def test_ledger_bills_compute_while_running_storage_always_bandwidth_per_byte() -> None:
    market, clock, _ = make_market()
    ask, machine, _, _ = offer_on(market)
    inst = market.create(ask, body(disk=50))
    clock.advance(3600)
    market.set_state(inst.id, "stopped")
    clock.advance(7200)
    market.ledger.bandwidth(inst.id, 2_000_000_000, machine.inet_up_cost, upload=True)
    market.destroy(inst.id)
    clock.advance(3600)  # nothing is billed after destroy
    acct = market.ledger.snapshot(clock())["instances"][str(inst.id)]
    storage_rate = 50 * machine.storage_cost / 720
    assert acct["compute"] == pytest.approx(inst.price * 1.0)
    assert acct["storage"] == pytest.approx(storage_rate * 3.0)
    assert acct["bandwidth"] == pytest.approx(2 * machine.inet_up_cost)
    assert acct["seconds"] == pytest.approx({"running": 3600, "stopped": 7200})
    assert acct["total"] == pytest.approx(acct["compute"] + acct["storage"] + acct["bandwidth"])
    assert market.balance() == pytest.approx(market.knobs.credit - acct["total"])


def test_destroyed_ghost_shows_briefly() -> None:
    market, clock, runner = make_market(quirks={"destroyed_ghost": True}, ghost_seconds=5)
    inst = market.create(offer_on(market)[0], body())
    market.destroy(inst.id)
    assert inst.id not in market.instances and inst.id in market.ghosts
    assert ("remove", inst.id) in runner.calls
    clock.advance(6)
    advance(market, clock(), 6)
    assert inst.id not in market.ghosts


def test_zombie_resumes_by_itself() -> None:
    market, clock, _ = make_market(quirks={"zombie": True}, zombie_delay=20)
    ask, _, _, min_bid = offer_on(market, bid=True)
    inst = market.create(ask, body(price=min_bid))
    disruptions.preempt(market, inst.id)  # a rival that never leaves on its own
    assert inst.phase == Phase.scheduling
    clock.advance(21)
    advance(market, clock(), 21)
    assert inst.phase == Phase.running and inst.starts == 2


def test_two_buyers_race_for_one_offer() -> None:
    market, _, _ = make_market()
    ask, *_ = offer_on(market, min_gpus=1)
    first = market.create(ask, body())
    with pytest.raises(SimError):
        market.create(ask, body())
    racy, _, _ = make_market(quirks={"offer_race": True})
    ask, *_ = next(o for o in racy.open_offers(bid=False) if o[1].num_gpus == o[2])
    first = racy.create(ask, body())
    second = racy.create(ask, body())  # the loser gets an instance that never runs
    assert first.phase == Phase.running and second.phase == Phase.scheduling
    assert instance_row(racy, second, 0.0)["actual_status"] == "created"  # it never ran


def test_random_events_are_reproducible_by_seed() -> None:
    def run() -> list[object]:
        market, clock, _ = make_market(
            seed=5, bid_arrival_rate=2.0, ondemand_arrival_rate=1.0, outage_scale=500
        )
        ask, _, _, min_bid = offer_on(market, bid=True)
        market.create(ask, body(price=min_bid))
        for _ in range(200):
            clock.advance(0.2)
            advance(market, clock(), 0.2)
        return [
            sorted((c.machine_id, c.gpu_ids, round(c.price_per_gpu, 6)) for c in market.claims.values()),
            sorted(h.id for h in market.hosts.values() if not h.online),
            [(i.id, i.phase) for i in market.instances.values()],
        ]

    first = run()
    assert first == run()
    assert first[0]  # the market did move


def test_a_create_the_credit_cannot_cover_is_refused_and_below_zero_everything_is_deleted() -> None:
    """As vast does: a create needs credit for an hour of the instance; a negative balance deletes the
    account's instances, disks and all."""
    from vastfleet.sim.events import advance

    market, _, _ = make_market()
    ask, _, _, _ = offer_on(market, min_gpus=1)
    market.knobs.credit = 0.05
    with pytest.raises(SimError) as refused:
        market.create(ask, body())
    assert refused.value.status == 402 and "credit" in refused.value.msg and not market.instances
    market.knobs.credit = 1000.0
    inst = market.create(ask, body())
    market.knobs.credit = market.ledger.spent(market.clock()) - 0.01  # the balance goes below zero
    advance(market, market.clock(), 0.0)
    assert inst.id not in market.instances, "deleted, disk and all"
