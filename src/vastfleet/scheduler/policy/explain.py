"""Reasons: the words and the terms behind every decision, the ranked offer list of `vastfleet offers`, and
why a job has no offer (which filter removed how many: `unplaced_reason`).

Builds strings and dicts from the cost model's numbers; decides nothing, does no I/O. Prices are written
one way (`$0.064/h`, `vastfleet.spec.money`).
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
from vastfleet.spec.money import format_price, format_usd


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
    price = format_price(float(terms["price_per_hour"]))
    if kind == "bid":
        head = f"bid {price} (+{float(terms['margin_over_min_bid']) * 100:.0f}% over min_bid)"
    else:
        head = f"on demand {price}"
    return (f"{head}: expected {format_usd(cost)} to finish ({terms['expected_hours']} h, "
            f"{terms['expected_interruptions']} interruptions expected, MTBI {terms['mtbi_hours']} h, "
            f"checkpoint every {terms['checkpoint_interval_s']:g} s); {why}")


def _filter_words(job: JobView) -> dict[str, str]:
    """What each feasibility filter (`filters.CHAIN`) removes, in the job's own terms."""
    return {
        "gpu_model": "not " + " or ".join(job.gpu_names),
        "gpu_count": f"fewer than {job.num_gpus} GPUs",
        "vram": f"under {job.min_gpu_ram_gb:g} GB of GPU memory",
        "cuda": f"CUDA below {job.min_cuda:g}",
        "disk": f"under {job.disk_gb:g} GB of disk",
        "verified": "unverified hosts",
        "reliability_floor": f"reliability under {job.min_reliability:g}",
        "direct_ports": f"fewer than {job.direct_ports} direct ports",
        "bandwidth": f"download under {job.min_inet_down_mbps:g} Mb/s",
        "price_cap": f"above the cap of {format_price(job.max_price_per_hour)}",
        "region": "outside " + ", ".join(job.regions),
        "excluded_host": "hosts excluded after failures",
    }


def removed_text(job: JobView, rejected: dict[str, int]) -> str:
    """`gpu_model removed 470 (not H100 SXM), ...`: the filters that removed any offer, in chain order."""
    words = _filter_words(job)
    removed = [f"{name} removed {count} ({words.get(name, name)})" for name, count in rejected.items() if count]
    return ", ".join(removed) or "no filter removed any"


def rejections_text(job: JobView, considered: int, rejected: dict[str, int], where: str = "") -> str:
    """`of 500 offers, gpu_model removed 470 (not H100 SXM), ...`."""
    return f"of {considered} offers{where}, {removed_text(job, rejected)}"


def unplaced_reason(job: JobView, table: OfferTable, now: float, *, searched_all: bool = False) -> str:
    """Why a pending job got no placement this pass, from the offers its search found (or, `searched_all`, from
    a search of the whole market when its own found none)."""
    rejected: dict[str, int] = {}
    fits = int(np.count_nonzero(feasible(job, table, now, rejected)))
    if len(table) == 0:
        return "no offer fits: the marketplace lists no offer at all"
    if fits == 0:
        where = " on the whole market" if searched_all else " its search found"
        return "no offer fits: " + rejections_text(job, len(table), rejected, where)
    return (f"{fits} of {len(table)} offers fit, none placed this pass: taken by another job, held by our own"
            " rentals, above the budget or the price ceiling, or the job waits for cheaper capacity")


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
                     checkpoints=job.checkpoints, work_h=job.remaining_work_hours,
                     interval_s=job.checkpoint_interval_s)
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
