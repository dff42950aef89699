"""One allocator per pass: pending jobs x offers -> placements, no offer bought twice.

Jobs are served most urgent first (least slack, then priority). Jobs with equal requirements share one
feasibility mask and one set of cost terms (cost = a * work + b per offer), so each job costs two array
operations and a partial sort; the shortlist is walked in order, skipping offers already taken this pass.
A job with a deadline and slack to spare waits rather than paying on demand when no interruptible offer
is there now. Pure: reads plain data, returns plain data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from vastfleet.scheduler.policy.cost import Terms, option_terms
from vastfleet.scheduler.policy.deadline import job_costs, od_fallback, slack_s
from vastfleet.scheduler.policy.explain import option_terms_dict, reason_text
from vastfleet.scheduler.policy.filters import feasible
from vastfleet.scheduler.policy.fleet import FleetBudget, FleetGuard, Holdings
from vastfleet.scheduler.policy.hazard import FleetStats
from vastfleet.scheduler.policy.types import FutureOffers, JobView, OfferTable, Placement, PolicyParams, Wait
from vastfleet.scheduler.policy.waiting import best_wait
from vastfleet.spec import Offer


def _group_key(job: JobView) -> tuple[object, ...]:
    return (*job.requirement_key(), job.reference_dlperf(), job.checkpoint_cost_s, job.checkpoints,
            job.checkpoint_interval_s)


def decide_on_table(jobs: Sequence[JobView], table: OfferTable, fleet: FleetStats, now: float,
                    params: PolicyParams, *, first_overhead_s: float | None = None,
                    bandwidth: bool = True, future: FutureOffers | None = None,
                    waits: list[Wait] | None = None, holdings: Holdings | None = None,
                    budget: FleetBudget | None = None) -> list[Placement]:
    """The vectorised allocator over an `OfferTable` (what the benchmark calls directly).

    `holdings`: the fleet's own rentals and creates in flight; no placement takes GPUs one of them holds, and
    each machine gets at most one placement per pass (`fleet.FleetGuard`). `budget`: the fleet's caps; a job
    whose rental would not fit waits (in `waits`, with the cap that binds).

    `first_overhead_s`/`bandwidth` price the start (default: a fresh launch); pass 0/False to price staying
    where a job already runs. With `future`, a job whose best offer now is clearly dearer than one expected
    back waits for that one instead (`waiting.best_wait`; each future offer is waited for by one job); the
    choice is appended to `waits` when given.
    """
    n = len(table)
    if n == 0 or not jobs:
        return []
    groups: dict[tuple[object, ...], tuple[np.ndarray, Terms]] = {}
    taken = np.zeros(n, dtype=bool)
    guard = FleetGuard(table, holdings or Holdings())
    machines = table.machine
    assert machines is not None
    prepared: list[tuple[float, int, int, JobView]] = []
    for order, job in enumerate(jobs):
        key = _group_key(job)
        if key not in groups:
            idx = np.flatnonzero(feasible(job, table, now))
            sub = table.take(idx)
            groups[key] = (idx, option_terms(sub, fleet, params, ref_dlperf=job.reference_dlperf(),
                                             ckpt_s=job.checkpoint_cost_s, checkpoints=job.checkpoints,
                                             first_overhead_s=first_overhead_s, bandwidth=bandwidth,
                                             price_cap=job.max_price_per_hour,
                                             interval_s=job.checkpoint_interval_s))
        _, t = groups[key]
        od_speed = float(t.speed.max()) if len(t.speed) else 1.0
        slack = slack_s(now, job.deadline_at, job.remaining_work_hours, od_speed, params, job.checkpoint_cost_s)
        prepared.append((slack, -job.priority, order, job))
    prepared.sort(key=lambda p: (p[0], p[1], p[2]))
    placements: list[Placement] = []
    reserved = np.zeros(len(future) if future is not None else 0, dtype=bool)
    for _, _, _, job in prepared:
        idx, t = groups[_group_key(job)]
        if idx.size == 0:
            continue
        cost_bid, cost_od, bid_ok, od_ok, slack, why = job_costs(job, t, table.dph[idx], now, params, taken[idx])
        no_bid, no_od = guard.blocked(idx)
        cost_bid = np.where(no_bid, np.inf, cost_bid)
        cost_od = np.where(no_od, np.inf, cost_od)
        w = job.remaining_work_hours
        is_bid = cost_bid <= cost_od
        cost = np.where(is_bid, cost_bid, cost_od)
        # Slack to spare and no interruptible offer now: wait for one. An offer whose bid would cost more than
        # its on-demand price (within the job's cap) is there, just dearer: no reason to wait.
        mb = table.min_bid[idx]
        bid_now = np.isfinite(cost_bid) | ((mb > table.dph[idx]) & (mb <= job.max_price_per_hour))
        if bid_ok and od_ok and job.deadline_at is not None and not bid_now[~taken[idx]].any():
            continue
        chosen = _walk(cost, idx, taken, params.candidates)
        if chosen < 0:
            continue
        i = int(idx[chosen])
        if not math.isfinite(float(cost[chosen])):
            continue
        if cost[chosen] > job.budget_left:
            if waits is not None:
                waits.append(Wait(job.job_id, int(table.ids[i]), now, float(cost[chosen]), float(cost[chosen]),
                                  f"the job's budget: ${job.budget_left:.4f} left, the cheapest placement expects"
                                  f" ${float(cost[chosen]):.4f}"))
            continue
        if future is not None and job.interruptible != "never" and bid_ok:
            wait = best_wait(job, float(cost[chosen]), od_fallback(t, cost_od), future, fleet, now, params,
                             reserved)
            if wait is not None:
                reserved[wait[0]] = True
                if waits is not None:
                    waits.append(wait[1])
                continue
        rate = float((t.bid[chosen] if is_bid[chosen] else table.dph[i]) + table.storage_dph[i])
        if budget is not None and not budget.fits(rate):
            if waits is not None:
                waits.append(Wait(job.job_id, int(table.ids[i]), now, float(cost[chosen]), float(cost[chosen]),
                                  f"{budget.why}: ${rate:.4f}/h more does not fit"))
            continue
        if budget is not None:
            budget.spend(rate)
        taken[i] = True
        guard.take(i)
        kind: Literal["bid", "on_demand"] = "bid" if is_bid[chosen] else "on_demand"
        terms = option_terms_dict(t, int(chosen), kind, w, slack)
        terms["price_per_hour"] = round(float(t.bid[chosen] if kind == "bid" else table.dph[i]), 6)
        terms["on_demand_per_hour"] = round(float(table.dph[i]), 6)  # the ceiling of any later re-bid
        placements.append(Placement(job.job_id, int(table.ids[i]), int(machines[i]), kind,
                                    float(t.bid[chosen]) if kind == "bid" else None, float(cost[chosen]),
                                    reason_text(kind, terms, float(cost[chosen]), why), terms))
    return placements


def _walk(cost: np.ndarray, idx: np.ndarray, taken: np.ndarray, k: int) -> int:
    """Position in `cost` of the cheapest offer not yet taken (-1 if none is finite)."""
    free_cost = np.where(taken[idx], np.inf, cost)
    if free_cost.size <= k:
        best = int(np.argmin(free_cost))
        return best if np.isfinite(free_cost[best]) else -1
    short = np.argpartition(free_cost, k)[:k]
    best = int(short[np.argmin(free_cost[short])])
    return best if np.isfinite(free_cost[best]) else -1


def decide_placements(jobs: list[JobView], offers: list[Offer], fleet: FleetStats, now: float,
                      params: PolicyParams, *, future: FutureOffers | None = None,
                      waits: list[Wait] | None = None, holdings: Holdings | None = None,
                      budget: FleetBudget | None = None) -> list[Placement]:
    """The live loop's entry point: placements for pending jobs, each offer used at most once, none over
    GPUs our own rentals hold, none past the fleet's caps."""
    disk = max((j.disk_gb for j in jobs), default=20.0)
    return decide_on_table(jobs, OfferTable.from_offers(offers, disk), fleet, now, params, future=future,
                           waits=waits, holdings=holdings, budget=budget)
