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
from vastfleet.scheduler.policy.deadline import (
    bid_cost_with_deadline,
    interruptible_allowed,
    should_escalate_to_on_demand,
    slack_s,
)
from vastfleet.scheduler.policy.explain import option_terms_dict, reason_text
from vastfleet.scheduler.policy.filters import feasible
from vastfleet.scheduler.policy.hazard import FleetStats
from vastfleet.scheduler.policy.types import FutureOffers, JobView, OfferTable, Placement, PolicyParams, Wait
from vastfleet.scheduler.policy.waiting import best_wait
from vastfleet.spec import Offer


def _group_key(job: JobView) -> tuple[object, ...]:
    return (*job.requirement_key(), job.reference_dlperf(), job.checkpoint_cost_s, job.checkpoints)


def _modes(job: JobView, t: Terms, now: float, params: PolicyParams) -> tuple[bool, bool, float, str]:
    """(bid allowed, on demand allowed, slack, why) for one job."""
    od_speed = float(t.speed.max()) if len(t.speed) else 1.0
    slack = slack_s(now, job.deadline_at, job.remaining_work_hours, od_speed, params, job.checkpoint_cost_s)
    if job.interruptible == "never":
        return False, True, slack, "the job asks for on demand only"
    if job.interruptible == "always":
        return True, False, slack, "the job asks for interruptible only"
    tau = float(np.median(t.tau_bid)) if len(t.tau_bid) else params.max_ckpt_interval_s
    if not interruptible_allowed(slack, tau, params, job.checkpoint_cost_s):
        return False, True, slack, f"slack {slack / 3600:.2f} h no longer covers an interruption: on demand to the end"
    if should_escalate_to_on_demand(job.interruption_times, now, params):
        return False, True, slack, (f"{params.escalate_after} interruptions within "
                                    f"{params.escalate_window_s / 3600:.0f} h: escalated to on demand")
    return True, True, slack, "lowest expected cost among feasible offers"


def decide_on_table(jobs: Sequence[JobView], table: OfferTable, fleet: FleetStats, now: float,
                    params: PolicyParams, *, first_overhead_s: float | None = None,
                    bandwidth: bool = True, future: FutureOffers | None = None,
                    waits: list[Wait] | None = None) -> list[Placement]:
    """The vectorised allocator over an `OfferTable` (what the benchmark calls directly).

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
    prepared: list[tuple[float, int, int, JobView]] = []
    for order, job in enumerate(jobs):
        key = _group_key(job)
        if key not in groups:
            idx = np.flatnonzero(feasible(job, table, now))
            sub = table.take(idx)
            groups[key] = (idx, option_terms(sub, fleet, params, ref_dlperf=job.reference_dlperf(),
                                             ckpt_s=job.checkpoint_cost_s, checkpoints=job.checkpoints,
                                             first_overhead_s=first_overhead_s, bandwidth=bandwidth))
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
        bid_ok, od_ok, slack, why = _modes(job, t, now, params)
        w = job.remaining_work_hours
        cap = job.max_price_per_hour
        cost_od = np.where(od_ok & (table.dph[idx] <= cap), t.a_od * w + t.b_od, np.inf)
        cost_od = _on_time_only(cost_od, job, t, now, params, taken[idx])
        cost_bid = np.where(bid_ok & (t.bid <= cap), _deadline_aware_bid_cost(job, t, slack, cost_od, params), np.inf)
        is_bid = cost_bid <= cost_od
        cost = np.where(is_bid, cost_bid, cost_od)
        if bid_ok and od_ok and job.deadline_at is not None and not np.isfinite(cost_bid[~taken[idx]]).any():
            continue  # slack to spare and no interruptible offer now: wait for one
        chosen = _walk(cost, idx, taken, params.candidates)
        if chosen < 0:
            continue
        i = int(idx[chosen])
        if not math.isfinite(float(cost[chosen])) or cost[chosen] > job.budget_left:
            continue
        if future is not None and job.interruptible != "never" and bid_ok:
            wait = best_wait(job, float(cost[chosen]), _od_fallback(t, cost_od), future, fleet, now, params,
                             reserved)
            if wait is not None:
                reserved[wait[0]] = True
                if waits is not None:
                    waits.append(wait[1])
                continue
        taken[i] = True
        kind: Literal["bid", "on_demand"] = "bid" if is_bid[chosen] else "on_demand"
        terms = option_terms_dict(t, int(chosen), kind, w, slack)
        terms["price_per_hour"] = round(float(t.bid[chosen] if kind == "bid" else table.dph[i]), 6)
        placements.append(Placement(job.job_id, int(table.ids[i]), kind,
                                    float(t.bid[chosen]) if kind == "bid" else None, float(cost[chosen]),
                                    reason_text(kind, terms, float(cost[chosen]), why), terms))
    return placements


def _od_fallback(t: Terms, cost_od: np.ndarray) -> tuple[float, float, float]:
    """(per-work cost, fixed cost, speed) of the best on-demand offer to finish on, and the fastest speed."""
    finite = np.isfinite(cost_od)
    if not finite.any():
        return math.inf, math.inf, float(t.speed.max()) if len(t.speed) else 1.0
    best = int(np.argmin(np.where(finite, t.a_od, np.inf)))
    return float(t.a_od[best]), float(t.b_od[best]), float(t.speed.max())


def _deadline_aware_bid_cost(job: JobView, t: Terms, slack: float, cost_od: np.ndarray,
                              params: PolicyParams) -> np.ndarray:
    od_a, od_b, s_od = _od_fallback(t, cost_od)
    return bid_cost_with_deadline(t.a_bid, t.b_bid, t.speed, t.factor_bid, t.tau_bid, job.remaining_work_hours,
                                  slack, job.checkpoint_cost_s, params, od_a, od_b, s_od)


def _on_time_only(cost_od: np.ndarray, job: JobView, t: Terms, now: float, params: PolicyParams,
                  taken: np.ndarray) -> np.ndarray:
    """On demand is the deadline's safety net: when some free offer finishes in time, drop those that do not."""
    if job.deadline_at is None or not len(cost_od):
        return cost_od
    run_s = job.remaining_work_hours * 3600.0 / t.speed * (1.0 + job.checkpoint_cost_s / t.tau_od)
    meets = now + params.restart_overhead_s + run_s <= job.deadline_at
    if (meets & np.isfinite(cost_od) & ~taken).any():
        return np.where(meets, cost_od, np.inf)
    return cost_od


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
                      waits: list[Wait] | None = None) -> list[Placement]:
    """The live loop's entry point: placements for pending jobs, each offer used at most once."""
    disk = max((j.disk_gb for j in jobs), default=20.0)
    return decide_on_table(jobs, OfferTable.from_offers(offers, disk), fleet, now, params, future=future,
                           waits=waits)
