"""The bid: the margin over min_bid that minimises expected cost, and raise-vs-move when outbid.

A higher bid costs more per hour and is outbid less often; `option_terms` evaluates every margin of
`PolicyParams.margins` and keeps the cheapest. On an outbid the paused instance keeps its disk, so raising
its bid restarts in place (resume overhead, no download); moving pays a fresh restart elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vastfleet.scheduler.policy.cost import option_terms
from vastfleet.scheduler.policy.deadline import interruptible_allowed, slack_s
from vastfleet.scheduler.policy.explain import option_terms_dict
from vastfleet.scheduler.policy.filters import feasible
from vastfleet.scheduler.policy.hazard import FleetStats
from vastfleet.scheduler.policy.types import Decision, JobView, OfferTable, PolicyParams
from vastfleet.spec import Offer
from vastfleet.spec.money import format_price, format_usd


def lower_running_bid(job: JobView, here: OfferTable, current_bid: float, fleet: FleetStats,
                      params: PolicyParams) -> float | None:
    """The lowest running bid fell under a running rental's bid (`here.min_bid`, one row): the bid to change
    to (vast's `change bid`, no restart), or None to keep the current one. The margin is the one that is best
    now, for the work left."""
    t = option_terms(here, fleet, params, ref_dlperf=job.reference_dlperf(), ckpt_s=job.checkpoint_cost_s,
                     checkpoints=job.checkpoints, work_h=job.remaining_work_hours, first_overhead_s=0.0,
                     bandwidth=False, price_cap=job.max_price_per_hour, interval_s=job.checkpoint_interval_s)
    bid = float(t.bid[0])
    if not math.isfinite(float(t.a_bid[0])):
        return None  # no bid on it fits the ceilings: keep the one it has
    return bid if bid < current_bid * (1.0 - 1e-6) else None


def outbid_decision(job: JobView, paused: OfferTable, others: OfferTable, fleet: FleetStats, now: float,
                    params: PolicyParams) -> Decision:
    """Raise the paused instance's bid, or move, whichever finishes cheaper in expectation."""
    w = job.remaining_work_hours
    ref = job.reference_dlperf()
    raise_t = option_terms(paused, fleet, params, ref_dlperf=ref, ckpt_s=job.checkpoint_cost_s,
                           checkpoints=job.checkpoints, work_h=w, first_overhead_s=params.resume_overhead_s,
                           bandwidth=False, price_cap=job.max_price_per_hour,
                           interval_s=job.checkpoint_interval_s)
    raise_cost = float(raise_t.a_bid[0] * w + raise_t.b_bid[0])
    mask = feasible(job, others, now) if len(others) else np.zeros(0, dtype=bool)
    move_cost, move_od_speed = math.inf, 0.0
    if mask.any():
        sub = others.take(np.flatnonzero(mask))
        mt = option_terms(sub, fleet, params, ref_dlperf=ref, ckpt_s=job.checkpoint_cost_s,
                          checkpoints=job.checkpoints, work_h=w, price_cap=job.max_price_per_hour,
                          interval_s=job.checkpoint_interval_s)
        costs = np.minimum(mt.a_bid * w + mt.b_bid, mt.a_od * w + mt.b_od)
        move_cost = float(costs.min())
        move_od_speed = float(mt.speed.max())
    od_speed = max(float(raise_t.speed[0]), move_od_speed)
    slack = slack_s(now, job.deadline_at, w, od_speed, params, job.checkpoint_cost_s)
    terms = option_terms_dict(raise_t, 0, "bid", w, slack)
    terms.update({"raise_cost": round(raise_cost, 4), "move_cost": round(move_cost, 4)})
    if job.interruptible == "never" or not interruptible_allowed(slack, float(raise_t.tau_bid[0]), params,
                                                                 job.checkpoint_cost_s):
        return Decision("move", None, move_cost, "slack no longer covers another interruption: move", terms)
    if not math.isfinite(raise_cost):
        return Decision("move", None, move_cost, "no bid on the paused instance fits the price ceilings: move",
                        terms)
    if raise_cost <= move_cost:
        bid = float(raise_t.bid[0])
        return Decision("raise", bid, raise_cost,
                        f"raise bid to {format_price(bid)} in place: {format_usd(raise_cost)} expected vs"
                        f" {format_usd(move_cost)} to move",
                        terms)
    return Decision("move", None, move_cost,
                    f"move: {format_usd(move_cost)} expected vs {format_usd(raise_cost)} to raise in place", terms)


def on_outbid(job: JobView, paused_offer: Offer, other_offers: Sequence[Offer], fleet: FleetStats, now: float,
              params: PolicyParams) -> Decision:
    """The live loop's entry point: `paused_offer.min_bid` is the lowest bid that runs now."""
    return outbid_decision(job, OfferTable.from_offers([paused_offer], job.disk_gb),
                           OfferTable.from_offers(list(other_offers), job.disk_gb), fleet, now, params)
