"""Filters, hazard learning, cost model, bids, deadlines and cadence as behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.policy.factories import make_job, make_offer
from vastfleet.scheduler.policy import (
    FleetStats,
    OfferTable,
    PolicyParams,
    checkpoint_interval,
    decide_placements,
    feasible,
    hazards,
    interruptible_allowed,
    lower_running_bid,
    on_outbid,
    option_terms,
    rank_offers,
    should_escalate_to_on_demand,
    slack_s,
)

P = PolicyParams()


@pytest.mark.parametrize(
    ("offer_over", "job_over", "rejected_by"),
    [
        ({"gpu_name": "RTX 3060"}, {}, "gpu_model"),
        ({"num_gpus": 1}, {"num_gpus": 2}, "gpu_count"),
        ({"gpu_ram_gb": 12}, {"min_gpu_ram_gb": 24}, "vram"),
        ({"cuda_max_good": 11.8}, {"min_cuda": 12.1}, "cuda"),
        ({"disk_space": 10}, {"disk_gb": 40}, "disk"),
        ({"verified": False}, {"verified": True}, "verified"),
        ({"reliability": 0.8}, {"min_reliability": 0.9}, "reliability_floor"),
        ({"direct_port_count": 0}, {"direct_ports": 2}, "direct_ports"),
        ({"inet_down": 10}, {"min_inet_down_mbps": 100}, "bandwidth"),
        ({"dph_total": 2.0, "min_bid": 1.0}, {"max_price_per_hour": 0.5}, "price_cap"),
        ({"geolocation": "DE"}, {"regions": ("US",)}, "region"),
        ({"host_id": 77}, {"excluded_hosts": frozenset({77})}, "excluded_host"),
    ],
)
def test_each_filter_rejects_with_its_name(offer_over, job_over, rejected_by):
    table = OfferTable.from_offers([make_offer(**offer_over), make_offer(num_gpus=2)])
    counts: dict[str, int] = {}
    mask = feasible(make_job(**job_over), table, 0.0, counts)
    assert mask.tolist() == [False, True]
    assert counts[rejected_by] == 1
    assert sum(counts.values()) == 1


def test_faster_gpu_at_higher_price_can_be_cheaper_to_finish():
    slow = make_offer(gpu_name="RTX 3090", dlperf=22.0, dph_total=0.25, min_bid=0.12)
    fast = make_offer(gpu_name="RTX 4090", dlperf=44.0, dph_total=0.40, min_bid=0.15)
    [pl] = decide_placements([make_job()], [slow, fast], FleetStats(), 0.0, P)
    assert pl.offer_id == fast.id and pl.kind == "bid"
    assert pl.terms["speed"] == pytest.approx(1.0, rel=0.01)
    assert "expected $" in pl.reason


def test_hazard_learns_from_host_failures_gamma_poisson():
    stats = FleetStats()
    stats.see(1, "RTX 4090", 0.99)
    stats.see(2, "RTX 4090", 0.99)
    stats.advance(100.0)
    for _ in range(10):
        stats.observe_loss(1, "RTX 4090", offline=True)
    # the fleet saw 10 outages where reliability 0.99 predicts 2 (0.01/h x 200 host-hours): the scale of
    # "1 - reliability" is learned, (a + 10) / (a + 2) = 3 with a = 2
    assert stats.offline_scale(2.0) == pytest.approx(3.0)
    loss, off, _ = hazards(stats, np.array([1, 2, 3]), np.array(["RTX 4090"] * 3, dtype=object),
                           np.array([0.99, 0.99, 0.99]), np.array(P.margins))
    assert loss[0] > loss[2] > loss[1]  # the failing host, an unseen host (fleet prior), a clean host
    assert off[0] > off[2] > off[1]
    # the failing host's posterior: (a + n) / (a / prior + x) with prior 0.03/h, 10 outages in 100 h
    assert off[0] == pytest.approx(12 / (2 / 0.03 + 100))
    assert off[2] == pytest.approx(0.03)


def test_outbids_observed_raise_the_chosen_margin():
    offer = make_offer()
    quiet = option_terms(OfferTable.from_offers([offer]), FleetStats(), P, ref_dlperf=44.0, ckpt_s=60.0)
    stats = FleetStats()
    stats.see(offer.host_id, offer.gpu_name)
    stats.advance(50.0)
    for _ in range(40):
        stats.observe_outbid(offer.host_id, offer.gpu_name, 0.07)  # competing bids 7% over min_bid
    busy = option_terms(OfferTable.from_offers([offer]), stats, P, ref_dlperf=44.0, ckpt_s=60.0)
    assert quiet.margin[0] == 0.0
    assert busy.margin[0] >= 0.1 and busy.bid[0] > offer.min_bid


def test_outbid_raises_in_place_when_cheaper_and_moves_when_not():
    job = make_job(remaining_work_hours=5.0)
    paused = make_offer(min_bid=0.16)
    pricey = make_offer(min_bid=0.35, dph_total=0.9)
    d = on_outbid(job, paused, [pricey], FleetStats(), 0.0, P)
    assert d.action == "raise" and d.bid is not None and d.bid >= 0.16
    cheap = make_offer(min_bid=0.05, dph_total=0.2)
    d2 = on_outbid(job, make_offer(min_bid=0.6, dph_total=0.9), [cheap], FleetStats(), 0.0, P)
    assert d2.action == "move" and d2.terms["move_cost"] < d2.terms["raise_cost"]


def test_young_daly_interval():
    assert checkpoint_interval(60.0, 1.0 / 10) == pytest.approx(math.sqrt(2 * 60 * 36000))
    assert checkpoint_interval(60.0, 0.0) == 4 * 3600
    assert checkpoint_interval(1.0, 100.0) == 300.0


def test_deadline_rule_and_escalation():
    s = slack_s(0.0, 20 * 3600.0, 10.0, 1.0, P, 60.0)
    assert interruptible_allowed(s, 1800.0, P)
    tight = slack_s(0.0, 10.5 * 3600.0, 10.0, 1.0, P, 60.0)
    assert not interruptible_allowed(tight, 1800.0, P)
    job = make_job(deadline_at=10.6 * 3600.0)
    [pl] = decide_placements([job], [make_offer()], FleetStats(), 0.0, P)
    assert pl.kind == "on_demand" and "on demand to the end" in pl.reason
    times = tuple(float(t) for t in range(0, 6 * 600, 600))
    assert should_escalate_to_on_demand(times, 3600.0, P)
    assert not should_escalate_to_on_demand(times[:2], 3600.0, P)
    [esc] = decide_placements([make_job(interruption_times=times, deadline_at=1e6)], [make_offer()], FleetStats(),
                              3600.0, P)
    assert esc.kind == "on_demand" and "escalated" in esc.reason


def test_on_demand_when_bidding_costs_more_in_expectation():
    job = make_job(deadline_at=100 * 3600.0)
    pl = decide_placements([job], [make_offer(min_bid=5.0, dph_total=0.4)], FleetStats(), 0.0, P)
    assert pl and pl[0].kind == "on_demand"


def test_waits_for_interruptible_capacity_while_slack_allows():
    offers = [make_offer(min_bid=5.0, dph_total=0.4)]  # no bid fits the price cap now
    far = make_job(deadline_at=100 * 3600.0, max_price_per_hour=1.0)
    assert decide_placements([far], offers, FleetStats(), 0.0, P) == []
    near = make_job(deadline_at=10.6 * 3600.0, max_price_per_hour=1.0)
    assert [p.kind for p in decide_placements([near], offers, FleetStats(), 0.0, P)] == ["on_demand"]


def test_rank_offers_explains_rejections():
    offers = [make_offer(), make_offer(gpu_name="RTX 3060"), make_offer(verified=False)]
    r = rank_offers(make_job(verified=True), OfferTable.from_offers(offers), FleetStats(), 0.0, P)
    assert r.rejected["gpu_model"] == 1 and r.rejected["verified"] == 1
    assert [row.kind for row in r.rows] == ["bid", "on_demand"]
    assert r.rows[0].expected_cost <= r.rows[1].expected_cost


def test_a_running_bid_follows_a_falling_min_bid_down_but_never_up():
    job = make_job(remaining_work_hours=5.0)
    cheaper = OfferTable.from_offers([make_offer(min_bid=0.10)], job.disk_gb)
    bid = lower_running_bid(job, cheaper, 0.15, FleetStats(), PolicyParams())
    assert bid is not None and 0.10 <= bid < 0.15
    dearer = OfferTable.from_offers([make_offer(min_bid=0.20)], job.disk_gb)
    assert lower_running_bid(job, dearer, 0.15, FleetStats(), PolicyParams()) is None


@pytest.mark.parametrize("interruptible,moves", [("auto", True), ("always", False)])
def test_a_running_bid_past_its_slack_moves_on_demand_unless_the_job_asks_for_bids_only(interruptible, moves):
    """Found by the sweep acceptance test: a survivor whose pace deadline tightened was moved on demand
    although its spec says `interruptible: always` (bids only)."""
    from vastfleet.scheduler.policy import FleetStats, OfferTable, PolicyParams
    from vastfleet.scheduler.policy.step import Held, Move, StepInput, decide_step

    here, other = make_offer(), make_offer()
    job = make_job(interruptible=interruptible, deadline_at=3600.0 * 10.5)  # 10 h of work, 30 min of slack
    held = Held(job, OfferTable.from_offers([here]), "bid", 0.2, False, 1800.0)
    step = decide_step(StepInput(waiting=[], held=[held], offers=OfferTable.from_offers([other]),
                                 fleet=FleetStats(), now=0.0, params=PolicyParams()))
    assert bool([d for d in step.decisions if isinstance(d, Move) and d.to == "on_demand"]) == moves
