"""Placement as the reconcile loop calls it: pending jobs x offers -> one offer (and a bid) per job.

`simple_placements` is the stand-in: the cheapest feasible offer per job, interruptible when the spec
allows it and it is cheaper. `policy_placements` calls the bidding policy (`scheduler.policy`) with the same
shape when it is installed, so switching is one line in `default_placer`. Pure: no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

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
    price: float = 0.0  # the $/h we expect to pay


Placer = Callable[[Sequence[Job], Mapping[str, Sequence[Offer]], float], list[Placement]]


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


def simple_placements(jobs: Sequence[Job], offers: Mapping[str, Sequence[Offer]], now: float) -> list[Placement]:
    taken: set[int] = set()
    out: list[Placement] = []
    for job in jobs:  # already in priority order
        cap = job.spec.resources.max_price_per_hour
        best: tuple[float, Offer, float | None] | None = None
        for offer in offers.get(job.id, ()):
            if offer.id in taken or not feasible(job, offer):
                continue
            if job.spec.interruptible == Interruptible.always and not offer.is_bid:
                continue
            price, bid = price_of(job, offer)
            if cap is not None and price > cap:
                continue
            if best is None or price < best[0]:
                best = (price, offer, bid)
        if best is None:
            continue
        price, offer, bid = best
        taken.add(offer.id)
        kind = f"bid ${bid:.3f}/h" if bid is not None else f"on demand ${price:.3f}/h"
        out.append(Placement(job.id, offer.id, bid, f"cheapest feasible: offer {offer.id} {offer.gpu_name} {kind}",
                             price))
    return out


def default_placer() -> Placer:
    """The bidding policy's placement when it is importable, else the simple one."""
    try:
        from vastfleet.scheduler.policy_adapter import PolicyPlacer
    except ImportError as exc:
        log.info("bidding policy unavailable (%s): cheapest feasible placement", exc)
        return simple_placements
    return PolicyPlacer()
