"""Waiting for a better offer that is expected back: the option value of renting nothing for a while.

Without foresight two kinds of such offers are known: one our own job holds (free when that job ends: its
remaining work at the offer's speed, with the checkpoints and interruptions the cost model expects), and one
that went away for a while (its host offline, or rented on demand), back after the mean downtime this fleet
has seen. Waiting rents nothing, so it costs only slack: a job waits when renting that offer later is
expected to cost at least `wait_saving` less than the best offer now and the slack left then still covers
an interruption. A job without a deadline waits at most `max_wait_s`. Pure: plain data in, plain data out.
"""

from __future__ import annotations

import math

import numpy as np

from vastfleet.scheduler.policy.cost import option_terms, wall_factor
from vastfleet.scheduler.policy.deadline import bid_cost_with_deadline, should_escalate_to_on_demand, slack_s
from vastfleet.scheduler.policy.filters import feasible
from vastfleet.scheduler.policy.hazard import FleetStats
from vastfleet.scheduler.policy.types import FutureOffers, JobView, PolicyParams, Wait

MAX_WAIT_NO_DEADLINE_S = 2 * 3600.0


def held_until(now: float, remaining_work_h: float, speed: float, hazard: float, ckpt_interval_s: float,
               ckpt_s: float, params: PolicyParams) -> float:
    """When one of our jobs is expected to free its offer: its remaining work at the offer's speed, with the
    checkpoints and interruptions the cost model expects."""
    f = float(wall_factor(np.array([hazard]), np.array([ckpt_interval_s]), ckpt_s, params.restart_overhead_s,
                          True)[0])
    if not math.isfinite(f):
        return math.inf
    return now + remaining_work_h / max(speed, 1e-9) * f * 3600.0


def best_wait(job: JobView, cost_now: float, od_fallback: tuple[float, float, float], future: FutureOffers,
              fleet: FleetStats, now: float, params: PolicyParams, reserved: np.ndarray) -> tuple[int, Wait] | None:
    """(row of `future`, the wait) worth choosing instead of renting now at `cost_now`, or None.

    `od_fallback` is (per-work cost, fixed cost, speed) of the best on-demand offer now, the deadline's safety
    net; `reserved` marks future offers another job already waits for this pass.
    """
    if job.interruptible == "never" or not len(future) or not math.isfinite(cost_now):
        return None
    if should_escalate_to_on_demand(job.interruption_times, now, params):
        return None
    limit = math.inf if job.deadline_at is not None else now + MAX_WAIT_NO_DEADLINE_S
    at = future.available_at
    mask = feasible(job, future.table, now) & ~reserved & (at > now) & (at <= limit)
    if not mask.any():
        return None
    idx = np.flatnonzero(mask)
    sub = future.table.take(idx)
    w = job.remaining_work_hours
    t = option_terms(sub, fleet, params, ref_dlperf=job.reference_dlperf(), ckpt_s=job.checkpoint_cost_s,
                     checkpoints=job.checkpoints, work_h=w, interval_s=job.checkpoint_interval_s)
    od_a, od_b, od_speed = od_fallback
    speed = max(od_speed, float(t.speed.max()))
    slack = slack_s(0.0, job.deadline_at, w, speed, params, job.checkpoint_cost_s) - at[idx]
    need = params.restart_overhead_s + t.tau_bid + job.checkpoint_cost_s + params.deadline_guard_s
    cost = bid_cost_with_deadline(t.a_bid, t.b_bid, t.speed, t.factor_bid, t.tau_bid, w, slack,
                                  job.checkpoint_cost_s, params, od_a, od_b, speed)
    cost = np.where((slack > need) & (t.bid <= job.max_price_per_hour), cost, np.inf)
    i = int(np.argmin(cost))
    if not cost[i] < (1.0 - params.wait_saving) * cost_now or cost[i] > job.budget_left:
        return None
    row = int(idx[i])
    hours = (float(at[row]) - now) / 3600.0
    return row, Wait(job.job_id, int(future.table.ids[row]), float(at[row]), float(cost[i]), cost_now,
                     f"wait {hours:.1f} h for offer {int(future.table.ids[row])} ({future.why[row]}): expected "
                     f"${float(cost[i]):.2f} then vs ${cost_now:.2f} now")
