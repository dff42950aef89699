"""Waiting for an offer expected back: when it pays, when the slack forbids it, one waiter per offer."""

from __future__ import annotations

import numpy as np

from tests.policy.factories import make_job, make_offer
from tests.policy.test_replay import market_of
from vastfleet.scheduler.policy import (
    FleetStats,
    FutureOffers,
    OfferTable,
    PolicyParams,
    Wait,
    decide_placements,
)
from vastfleet.sim.replay import Options, Replay, WorkJob
from vastfleet.sim.replay.ours import Ours

P = PolicyParams()
H = 3600.0


def future_of(*offers_and_times: tuple) -> FutureOffers:
    offers = [o for o, _ in offers_and_times]
    table = OfferTable.from_offers(offers)
    table.dph = np.full(len(offers), np.inf)
    return FutureOffers(table, np.array([t for _, t in offers_and_times], dtype=float), ["held"] * len(offers))


def place(jobs, offers, future):
    waits: list[Wait] = []
    return decide_placements(jobs, offers, FleetStats(), 0.0, P, future=future, waits=waits), waits


def test_a_job_with_slack_waits_for_a_much_cheaper_offer_back_soon():
    dear, cheap = make_offer(min_bid=0.40, dph_total=1.0), make_offer(min_bid=0.10, dph_total=1.0)
    job = make_job(remaining_work_hours=4.0, deadline_at=24 * H)
    placed, waits = place([job], [dear], future_of((cheap, 1 * H)))
    assert placed == []
    [w] = waits
    assert w.offer_id == cheap.id and w.until == 1 * H and w.expected_cost < 0.5 * w.cost_now
    assert "wait 1.0 h" in w.reason


def test_no_wait_when_the_slack_would_not_cover_an_interruption_after_it():
    dear, cheap = make_offer(min_bid=0.40, dph_total=1.0), make_offer(min_bid=0.10, dph_total=1.0)
    job = make_job(remaining_work_hours=4.0, deadline_at=5.6 * H)
    placed, waits = place([job], [dear], future_of((cheap, 1 * H)))
    assert [p.offer_id for p in placed] == [dear.id] and waits == []


def test_no_wait_for_a_small_saving_or_a_job_that_wants_on_demand():
    dear, cheap = make_offer(min_bid=0.40, dph_total=1.0), make_offer(min_bid=0.39, dph_total=1.0)
    job = make_job(remaining_work_hours=4.0, deadline_at=24 * H)
    placed, waits = place([job], [dear], future_of((cheap, 1 * H)))
    assert [p.offer_id for p in placed] == [dear.id] and waits == []
    cheaper = make_offer(min_bid=0.05, dph_total=1.0)
    never = make_job(remaining_work_hours=4.0, deadline_at=24 * H, interruptible="never")
    placed, waits = place([never], [dear], future_of((cheaper, 1 * H)))
    assert [p.kind for p in placed] == ["on_demand"] and waits == []


def test_without_a_deadline_a_job_waits_two_hours_at_most():
    dear, cheap = make_offer(min_bid=0.40, dph_total=1.0), make_offer(min_bid=0.10, dph_total=1.0)
    job = make_job(remaining_work_hours=4.0)
    assert place([job], [dear], future_of((cheap, 1.5 * H)))[0] == []
    assert [p.offer_id for p in place([job], [dear], future_of((cheap, 3 * H)))[0]] == [dear.id]


def test_one_job_waits_per_future_offer_the_other_rents_now():
    dear, cheap = make_offer(min_bid=0.40, dph_total=1.0), make_offer(min_bid=0.10, dph_total=1.0)
    spare = make_offer(min_bid=0.45, dph_total=1.0)
    jobs = [make_job(job_id=f"j{i}", remaining_work_hours=4.0, deadline_at=24 * H) for i in range(2)]
    placed, waits = place(jobs, [dear, spare], future_of((cheap, 1 * H)))
    assert len(waits) == 1 and len(placed) == 1
    assert {waits[0].job_id, placed[0].job_id} == {"j0", "j1"}


def test_in_the_replay_a_second_job_waits_for_the_cheap_offer_our_first_job_frees():
    events = [{"t": 0, "type": "offer", "id": "cheap", "host": 1, "gpu_name": "RTX 4090", "dph_total": 1.0,
               "min_bid": 0.1, "dlperf": 44.0, "reliability": 0.999},
              {"t": 0, "type": "offer", "id": "dear", "host": 2, "gpu_name": "RTX 4090", "dph_total": 1.0,
               "min_bid": 0.3, "dlperf": 44.0, "reliability": 0.999}]
    m = market_of(events, 300, horizon=3600 * 30)
    jobs = [WorkJob("first", 0.0, 2.0, 44.0, ("RTX 4090",), 1, 12 * H),
            WorkJob("second", 600.0, 2.0, 44.0, ("RTX 4090",), 1, 12 * H)]
    paid = {}
    for wait in (True, False):
        runs = Replay(m, jobs, Options()).run(Ours(wait=wait))
        assert all(r.done_at is not None and r.done_at <= r.job.deadline_at for r in runs.values())
        paid[wait] = runs["second"].dollars
    # waiting about two hours for the $0.1/h offer instead of renting the $0.3/h one at once
    assert paid[True] < 0.5 * paid[False]
