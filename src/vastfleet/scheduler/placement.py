"""Placement as the reconcile loop calls it: pending jobs x offers -> one offer (and a bid) per job.

`simple_placements` is the stand-in: the cheapest feasible offer per job, interruptible when the spec
allows it and it is cheaper, never over GPUs the fleet holds and never above the offer's on-demand price.
The bidding policy (`policy_adapter.PolicyPlacer`) has the same shape; `default_placer` picks it. Pure: no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from vastfleet.scheduler.policy.fleet import FleetBudget, FleetGuard, Holdings
from vastfleet.scheduler.policy.types import OfferTable
from vastfleet.spec.job import Job
from vastfleet.spec.jobspec import Interruptible
from vastfleet.spec.market import Offer

log = logging.getLogger(__name__)

BID_MARGIN = 1.25  # bid this much over min_bid: a thin margin is outbid at once


@dataclass(frozen=True)
class Placement:
    job_id: str
    offer_id: int
    bid: float | None  # None = on demand
    reason: str = ""
    price: float = 0.0  # expected $ to finish (the policy), or the $/h we expect to pay (the stand-in)
    offer_dph: float | None = None  # the offer's on-demand $/h: no later re-bid of this attempt goes above it
    machine_id: int | None = None  # the offer's machine


Placer = Callable[..., list[Placement]]  # (pending jobs, offers per job, now, *, holdings) -> placements


def feasible(job: Job, offer: Offer) -> bool:
    res = job.spec.resources
    if res.gpu and offer.gpu_name not in res.gpu:
        return False
    if offer.num_gpus < res.gpus:
        return False
    if res.min_gpu_ram_gb is not None and offer.gpu_ram_gb < res.min_gpu_ram_gb:
        return False
    if res.min_cuda is not None and offer.cuda_max_good < res.min_cuda:
        return False
    if offer.reliability < res.min_reliability:
        return False
    if offer.disk_space and offer.disk_space < res.disk_gb:
        return False
    return offer.direct_port_count >= res.direct_ports


def price_of(job: Job, offer: Offer) -> tuple[float, float | None]:
    """($/h, bid or None) for this job on this offer."""
    if offer.is_bid and job.spec.interruptible != Interruptible.never:
        bid = round(max(offer.min_bid * BID_MARGIN, offer.min_bid + 0.001), 4)
        return bid, bid
    return offer.dph_total, None


def simple_placements(jobs: Sequence[Job], offers: Mapping[str, Sequence[Offer]], now: float, *,
                      holdings: Holdings | None = None, budget: FleetBudget | None = None) -> list[Placement]:
    rows = {o.id: o for found in offers.values() for o in found}
    guard = FleetGuard(OfferTable.from_offers(list(rows.values())), holdings or Holdings())
    row_of = {oid: i for i, oid in enumerate(rows)}
    out: list[Placement] = []
    for job in jobs:  # already in priority order
        cap = job.spec.resources.max_price_per_hour
        best: tuple[float, Offer, float | None] | None = None
        for offer in offers.get(job.id, ()):
            i = row_of[offer.id]
            if not feasible(job, offer):
                continue
            if job.spec.interruptible == Interruptible.always and not offer.is_bid:
                continue
            price, bid = price_of(job, offer)
            if guard.no_bid[i] if bid is not None else guard.no_od[i]:
                continue
            on_demand = offer.dph_base or offer.dph_total
            if (cap is not None and price > cap) or (bid is not None and bid > on_demand):
                continue
            if best is None or price < best[0]:
                best = (price, offer, bid)
        if best is None:
            continue
        price, offer, bid = best
        if budget is not None and not budget.fits(price):
            continue
        if budget is not None:
            budget.spend(price)
        guard.take(row_of[offer.id])
        kind = f"bid ${bid:.3f}/h" if bid is not None else f"on demand ${price:.3f}/h"
        out.append(Placement(job.id, offer.id, bid, f"cheapest feasible: offer {offer.id} {offer.gpu_name} {kind}",
                             price, offer.dph_base or offer.dph_total, offer.machine_id))
    return out


def default_placer() -> Placer:
    """The bidding policy's placement when it is importable, else the simple one."""
    try:
        from vastfleet.scheduler.policy_adapter import PolicyPlacer
    except ImportError as exc:
        log.info("bidding policy unavailable (%s): cheapest feasible placement", exc)
        return simple_placements
    return PolicyPlacer()
