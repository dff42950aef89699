"""The fleet as placement must see it this pass, from the snapshot: our rentals (`Holdings`: every listed
instance of ours, and the machines of attempts not listed yet) and what new rentals may still add under the
caps (`FleetBudget`). Pure: plain data in and out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from vastfleet.scheduler.plan_types import PlanParams, Snapshot
from vastfleet.scheduler.policy.fleet import FleetBudget, Holdings, Rental
from vastfleet.spec.job import ATTEMPT_STATES, JobState
from vastfleet.spec.market import Instance

S = JobState


def fleet_budget(snap: Snapshot, params: PlanParams) -> FleetBudget:
    """What new rentals may add this pass, from the caps, the spend ledger's burn and the account's credit;
    `why` names the cap with the least room."""
    room: list[tuple[float, float, str]] = []  # ($/h left, $ left, why)
    burn = snap.burn
    coming = unlisted_rate(snap)
    if burn is not None:
        per_hour = burn.per_hour + coming
        if params.max_usd_per_hour is not None:
            room.append((params.max_usd_per_hour - per_hour, math.inf,
                         f"the fleet's cap of ${params.max_usd_per_hour:.2f}/h binds (${per_hour:.4f}/h now)"))
        for cap, spent, period in ((params.max_usd_per_day, burn.today, "day"),
                                   (params.max_usd_per_month, burn.month, "month")):
            if cap is not None:
                room.append((math.inf, cap - spent - per_hour,
                             (f"the fleet's cap of ${cap:.2f} a {period} binds (${spent:.4f} spent, an hour at"
                             f" ${per_hour:.4f}/h in hand)")))
    if snap.balance is not None:
        hour = (burn.per_hour if burn is not None else 0.0) + coming
        room.append((math.inf, snap.balance - params.credit_reserve_usd - hour,
                     (f"the account's credit ${snap.balance:.2f} is near its reserve of"
                     f" ${params.credit_reserve_usd:.2f} (an hour of the fleet in hand)")))
    if not room:
        return FleetBudget()
    tightest = min(room, key=lambda r: min(r[0], r[1]))
    return FleetBudget(min(r[0] for r in room), min(r[1] for r in room), tightest[2])


def unlisted_rate(snap: Snapshot) -> float:
    """$/h of the attempts placed but not listed yet (a create in flight, or made and not in this listing):
    the spend ledger bills only what the listing shows, so without these a pass right after a placement
    would see the cap's room still free and place again."""
    listed = {i.id for i in snap.instances}
    rate = 0.0
    for job in snap.jobs.values():
        if job is None or not (job.state == S.PLACING or job.state in ATTEMPT_STATES):
            continue
        if job.instance_id is None or job.instance_id not in listed:
            price = job.bid if job.bid is not None else job.offer_dph
            rate += price if price is not None and math.isfinite(price) else 0.0
    return rate


def rental_of(inst: Instance) -> Rental | None:
    """A listed instance of ours as the fleet guard sees it (None without a machine id)."""
    if inst.machine_id is None:
        return None
    status = (inst.actual_status or "").lower()
    return Rental(inst.id, inst.machine_id, max(inst.num_gpus, 1),
                  (inst.bid_price or inst.dph_total) if inst.is_bid else None,
                  status in ("running", "loading"), inst.gpu_ids)


def fleet_holdings(snap: Snapshot, ours: Sequence[tuple[Instance, str, int]],
                   by_label: Mapping[tuple[str, int], Sequence[Instance]]) -> Holdings:
    """Every listed rental of ours (whatever its phase; orphans and those being destroyed too: they hold GPUs
    until the listing shows them gone) and the
    machines of attempts the listing does not show (a create in flight or just done: the jobs are read before
    the listing and the offers after it, so a rental made in between is seen here or in the offers' prices)."""
    rentals = [r for inst, _, _ in ours if (r := rental_of(inst)) is not None]
    in_flight = frozenset(j.machine_id for j in snap.jobs.values()
                          if j is not None and j.machine_id is not None
                          and (j.state == S.PLACING or j.state in ATTEMPT_STATES)
                          and not by_label.get((j.id, j.epoch)))
    return Holdings(tuple(rentals), in_flight)
