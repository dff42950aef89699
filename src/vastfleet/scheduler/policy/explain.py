"""Reasons: the words and the terms behind every decision, and the ranked offer list of `vastfleet offers`.

Builds strings and dicts from the cost model's numbers; decides nothing, does no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vastfleet.scheduler.policy.cost import Terms, option_terms
from vastfleet.scheduler.policy.deadline import job_costs
from vastfleet.scheduler.policy.filters import feasible
from vastfleet.scheduler.policy.hazard import FleetStats
from vastfleet.scheduler.policy.types import JobView, OfferTable, PolicyParams


def option_terms_dict(t: Terms, i: int, kind: str, work_h: float, slack: float) -> dict[str, float | str]:
    bid = kind == "bid"
    h = float(t.h_bid[i] if bid else t.h_od[i])
    f = float(t.factor_bid[i] if bid else t.factor_od[i])
    hours = work_h / float(t.speed[i]) * f
    return {
        "kind": kind,
        "price_per_hour": round(float(t.bid[i]) if bid else float("nan"), 6) if bid else float("nan"),
        "margin_over_min_bid": round(float(t.margin[i]), 4) if bid else 0.0,
        "hazard_per_hour": round(h, 6),
        "mtbi_hours": round(1.0 / h, 2) if h > 0 else math.inf,
        "checkpoint_interval_s": round(float(t.tau_bid[i] if bid else t.tau_od[i]), 1),
        "speed": round(float(t.speed[i]), 4),
        "expected_hours": round(hours, 4),
        "expected_interruptions": round(h * hours, 4),
        "slack_hours": round(slack / 3600.0, 3) if math.isfinite(slack) else math.inf,
    }


def reason_text(kind: str, terms: dict[str, float | str], cost: float, why: str) -> str:
    if kind == "bid":
        head = (f"bid {terms['price_per_hour']}$/h (+{float(terms['margin_over_min_bid']) * 100:.0f}% over min_bid)")
    else:
        head = "on demand"
    return (f"{head}: expected ${cost:.2f} to finish ({terms['expected_hours']} h, "
            f"{terms['expected_interruptions']} interruptions expected, MTBI {terms['mtbi_hours']} h, "
            f"checkpoint every {terms['checkpoint_interval_s']} s); {why}")


@dataclass
class RankedOffer:
    offer_id: int
    kind: str
    bid: float | None
    price_per_hour: float
    expected_cost: float
    terms: dict[str, float | str]


@dataclass
class Ranking:
    rows: list[RankedOffer]
    considered: int
    rejected: dict[str, int] = field(default_factory=dict)


def rank_offers(job: JobView, table: OfferTable, fleet: FleetStats, now: float, params: PolicyParams,
                limit: int = 20) -> Ranking:
    """Every feasible (offer, kind) ranked by expected dollars to finish, with the filters' rejections. The
    costs are the allocator's (`deadline.job_costs`): deadline slack, price cap and the job's modes count."""
    rejected: dict[str, int] = {}
    mask = feasible(job, table, now, rejected)
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return Ranking([], len(table), rejected)
    sub = table.take(idx)
    t = option_terms(sub, fleet, params, ref_dlperf=job.reference_dlperf(), ckpt_s=job.checkpoint_cost_s,
                     checkpoints=job.checkpoints, work_h=job.remaining_work_hours)
    cost_bid, cost_od, _, _, slack, why = job_costs(job, t, sub.dph, now, params)
    w = job.remaining_work_hours
    rows: list[RankedOffer] = []
    for kind, cost, price in (("bid", cost_bid, t.bid), ("on_demand", cost_od, sub.dph)):
        for i in np.argsort(cost, kind="stable")[:limit]:
            if not np.isfinite(cost[i]):
                continue
            terms = option_terms_dict(t, int(i), kind, w, slack)
            terms["price_per_hour"] = round(float(price[i]), 6)
            terms["why"] = why
            rows.append(RankedOffer(int(sub.ids[i]), kind, float(t.bid[i]) if kind == "bid" else None,
                                    float(price[i]), float(cost[i]), terms))
    rows.sort(key=lambda r: (r.expected_cost, r.offer_id, r.kind))
    return Ranking(rows[:limit], len(table), rejected)
