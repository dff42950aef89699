"""The fleet never outbids itself, and no bid leaves its bounds.

Unit cases for `policy.fleet` and a property over the simulator's own market model (`sim.model.Market`, the
rules the HTTP simulator answers by): place many jobs pass after pass on a market where rivals bid too, rent
every placement in the model, and check that none of our rentals was ever paused by another of ours and that
every bid stayed under the offer's on-demand price, the job's cap and the fleet's ceiling.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.policy.factories import make_job, make_offer
from vastfleet.market.convert import instance_from_row, offer_from_row
from vastfleet.scheduler.plan import rental_of
from vastfleet.scheduler.policy import (
    FleetGuard,
    FleetStats,
    Holdings,
    OfferTable,
    PolicyParams,
    Rental,
    decide_placements,
)
from vastfleet.sim.fields import instance_row, offer_row
from vastfleet.sim.model import Market

P = PolicyParams()


def guard_for(offers, rentals=(), in_flight=()):
    return FleetGuard(OfferTable.from_offers(offers), Holdings(tuple(rentals), frozenset(in_flight)))


def test_a_bid_offer_priced_above_our_bid_on_its_machine_is_blocked():
    ours = Rental(1, machine_id=7, num_gpus=1, bid=0.20, holding=True)
    over = make_offer(machine_id=7, min_bid=0.201)  # the host would hand it our GPU
    free = make_offer(machine_id=7, min_bid=0.15)  # a free GPU at the host's floor
    elsewhere = make_offer(machine_id=8, min_bid=0.9)
    g = guard_for([over, free, elsewhere], [ours])
    assert g.no_bid.tolist() == [True, False, False]


def test_on_demand_offers_on_a_machine_our_bids_hold_are_blocked():
    ours = Rental(1, machine_id=7, num_gpus=1, bid=0.20, holding=True)
    g = guard_for([make_offer(machine_id=7), make_offer(machine_id=8)], [ours])
    assert g.no_od.tolist() == [True, False]
    on_demand = Rental(2, machine_id=9, num_gpus=1, bid=None, holding=True)
    g2 = guard_for([make_offer(machine_id=9, min_bid=5.0)], [on_demand])
    assert g2.no_od.tolist() == [False] and g2.no_bid.tolist() == [False], "on demand holds firmly: no conflict"


def test_a_paused_rental_of_ours_holds_nothing_to_protect():
    paused = Rental(1, machine_id=7, num_gpus=1, bid=0.20, holding=False)
    g = guard_for([make_offer(machine_id=7, min_bid=0.5)], [paused])
    assert not g.no_bid.any() and not g.no_od.any()


def test_in_flight_creates_and_this_pass_placements_close_their_machine():
    a, b, c = make_offer(machine_id=3), make_offer(machine_id=3, num_gpus=2), make_offer(machine_id=4)
    g = guard_for([a, b, c], in_flight=[3])
    assert g.no_bid.tolist() == [True, True, False] and g.no_od.tolist() == [True, True, False]
    g.take(2)
    assert g.no_bid.all()


def test_holds_our_gpu_by_gpu_ids_and_by_price():
    holder = Rental(1, machine_id=7, num_gpus=1, bid=0.30, holding=True, gpu_ids=(0,))
    paused_same = Rental(2, machine_id=7, num_gpus=1, bid=0.20, holding=False, gpu_ids=(0,))
    paused_other = Rental(3, machine_id=7, num_gpus=1, bid=0.20, holding=False, gpu_ids=(1,))
    h = Holdings((holder, paused_same, paused_other))
    assert h.holds_our_gpu(paused_same, 0.301) and not h.holds_our_gpu(paused_other, 0.5)
    no_ids = Holdings((Rental(1, 7, 1, 0.30, True), Rental(2, 7, 1, 0.20, False)))
    assert no_ids.holds_our_gpu(Rental(2, 7, 1, 0.20, False), 0.301), "it needs more than ours pays: ours holds it"
    assert not no_ids.holds_our_gpu(Rental(2, 7, 1, 0.20, False), 0.25)


def test_placements_skip_our_own_gpus_and_use_free_ones():
    ours = Rental(1, machine_id=7, num_gpus=1, bid=0.20, holding=True)
    over_ours = make_offer(machine_id=7, min_bid=0.201, dph_total=0.4)
    other = make_offer(machine_id=8, min_bid=0.30, dph_total=0.6)
    jobs = [make_job(job_id=f"j{i}", interruptible="always") for i in range(2)]
    placed = decide_placements(jobs, [over_ours, other], FleetStats(), 0.0, P, holdings=Holdings((ours,)))
    assert [(p.offer_id, p.kind) for p in placed] == [(other.id, "bid")]


def test_no_bid_above_the_offers_on_demand_price_the_jobs_cap_or_the_fleet_ceiling():
    huge = make_offer(min_bid=651_804_591.0, dph_total=0.4, dph_base=0.35)
    assert decide_placements([make_job(interruptible="always")], [huge], FleetStats(), 0.0, P) == []
    capped = make_offer(min_bid=0.30, dph_total=0.9, dph_base=0.8)
    assert decide_placements([make_job(interruptible="always", max_price_per_hour=0.25)], [capped], FleetStats(),
                             0.0, P) == []
    dear = make_offer(min_bid=2.0, dph_total=9.0, dph_base=8.0)  # an RTX 4090 at 5x the catalogue's $0.40/h
    assert decide_placements([make_job(interruptible="always")], [dear], FleetStats(), 0.0, P) == []
    fine = make_offer(min_bid=0.2, dph_total=0.5, dph_base=0.45)
    [p] = decide_placements([make_job(interruptible="always")], [fine], FleetStats(), 0.0, P)
    assert p.bid is not None and 0.2 <= p.bid <= 0.45


# --- the property, on the simulator's market model ------------------------------------------------------------


def _offers(market: Market, disk: float) -> list:
    """What a bid search and an on-demand search return now, merged as the live placer merges them."""
    now = market.clock()
    rows = {}
    for bid in (False, True):
        for ask, m, n, min_bid in market.open_offers(bid=bid):
            row = offer_row(market, ask, m, n, min_bid, "bid" if bid else "on-demand", disk, now)
            offer = offer_from_row(row, is_bid=bid)
            if offer.id not in rows or bid:
                rows[offer.id] = offer
    return list(rows.values())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), jobs=st.integers(5, 40), rivals=st.integers(0, 30),
       passes=st.integers(1, 4), gpus=st.sampled_from([("RTX 4090",), ("RTX 4090", "RTX 3090"), ("H100 SXM",)]))
def test_on_the_market_model_no_placement_of_ours_pauses_another_and_bids_stay_bounded(seed, jobs, rivals, passes,
                                                                                       gpus):
    clock = [1_700_000_000.0]
    market = Market(seed=seed, hosts=30, clock=lambda: clock[0])
    rng = np.random.default_rng(seed)
    machines = list(market.machines.values())
    for _ in range(rivals):  # rival bids already holding GPUs, at random prices
        m = machines[int(rng.integers(len(machines)))]
        g = int(rng.integers(m.num_gpus))
        market.add_claim(m.id, (g,), ondemand=bool(rng.random() < 0.3),
                         price_per_gpu=float(m.min_bid_per_gpu * rng.uniform(0.9, 2.5)), duration=None)
    views = [make_job(job_id=f"j{i}", gpu_names=gpus, min_reliability=0.0, verified=False,
                      interruptible=("auto", "always")[i % 2], max_price_per_hour=(math.inf, 1.5)[i % 3 == 0])
             for i in range(jobs)]
    ours: dict[int, str] = {}  # instance id -> job
    pending = list(views)
    fleet = FleetStats()
    for _ in range(passes):
        rows = [instance_row(market, market.instances[i], clock[0]) for i in ours]
        holdings = Holdings(tuple(r for row in rows if (r := rental_of(instance_from_row(row))) is not None))
        offers = _offers(market, 20.0)
        by_id = {o.id: o for o in offers}
        placed = decide_placements(pending, offers, fleet, clock[0], P, holdings=holdings)
        for p in placed:
            offer = by_id[p.offer_id]
            if p.bid is not None:
                assert p.bid <= offer.dph_base * (1 + 1e-9), "a bid above the offer's on-demand price"
                assert p.bid <= 3.0 * 2.30 * offer.num_gpus + 1e-9, "a bid above the fleet's ceiling"
                view = next(v for v in views if v.job_id == p.job_id)
                assert p.bid <= view.max_price_per_hour + 1e-9
            if p.offer_id not in market.asks:
                continue  # retired by an earlier create of this pass: vast answers 404, nothing is rented
            inst = market.create(p.offer_id, {"image": "x", "disk": 20, "price": p.bid})
            ours[inst.id] = p.job_id
            pending = [v for v in pending if v.job_id != p.job_id]
            paused = [i for i in ours if market.instances[i].phase.value == "scheduling"
                      and market.instances[i].is_bid and any(
                          ours.get(h.id) for h in market.holders(market.instances[i].machine_id).values()
                          if set(getattr(h, "gpu_ids", ())) & set(market.instances[i].gpu_ids))]
            assert not paused, f"our instance(s) {paused} paused by our own rental {inst.id}"
        clock[0] += 5.0
