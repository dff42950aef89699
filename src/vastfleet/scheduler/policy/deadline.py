"""Deadlines (the Can't-Be-Late rule family) and escalation to on demand after repeated interruptions.

Interruptible capacity is used only while the slack -- the time left before the deadline minus the time an
on-demand run would need from now -- still covers one more interruption (a restart plus the work lost since
the last checkpoint) and a guard; after that, on demand to the end. `job_costs` applies all of it to one
job's cost terms (the allocator and `vastfleet offers` both rank with it). Pure arithmetic, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vastfleet.scheduler.policy.cost import Terms
from vastfleet.scheduler.policy.types import JobView, PolicyParams


def slack_s(now: float, deadline_at: float | None, remaining_work_h: float, od_speed: float,
            params: PolicyParams, ckpt_s: float = 60.0, od_ckpt_interval_s: float = 4 * 3600.0) -> float:
    """Seconds we can still lose and finish on demand in time (inf without a deadline)."""
    if deadline_at is None:
        return float("inf")
    run_s = remaining_work_h * 3600.0 / max(od_speed, 1e-9) * (1.0 + ckpt_s / od_ckpt_interval_s)
    return deadline_at - now - params.restart_overhead_s - run_s


def interruptible_allowed(slack: float, ckpt_interval_s: float, params: PolicyParams,
                          ckpt_s: float = 60.0) -> bool:
    """True while the slack covers one more interruption: restart + lost cycle + guard."""
    need = params.restart_overhead_s + ckpt_interval_s + ckpt_s + params.deadline_guard_s
    return slack > need


def should_escalate_to_on_demand(interruption_times: Sequence[float], now: float, params: PolicyParams) -> bool:
    """N interruptions within the window: stop gambling on interruptible capacity for this job."""
    recent = [t for t in interruption_times if now - t <= params.escalate_window_s]
    return len(recent) >= params.escalate_after


def bid_cost_with_deadline(a_bid: np.ndarray, b_bid: np.ndarray, speed: np.ndarray, factor: np.ndarray,
                           tau: np.ndarray, work_h: float, slack: float | np.ndarray, ckpt_s: float,
                           params: PolicyParams, od_a: float, od_b: float, od_speed: float) -> np.ndarray:
    """Expected cost of bidding, counting that a slow offer eats slack and may force the rest on demand.

    While running at effective speed s/F (work-hours per hour), the slack shrinks at 1 - (s/F)/s_od per hour;
    when it reaches what one more interruption needs, the job moves to the best on-demand offer (cost
    od_a * work + od_b) to the end. `slack` may differ per offer (an offer that is free only later).
    """
    plain = a_bid * work_h + b_bid
    if not len(speed) or not np.isfinite(np.asarray(slack)).any() or not np.isfinite(od_a):
        return plain
    eff_speed = speed / np.maximum(factor, 1e-9)
    shrink = 1.0 - eff_speed / max(od_speed, 1e-9)
    need_h = (params.restart_overhead_s + tau + ckpt_s + params.deadline_guard_s) / 3600.0
    room_h = np.maximum(np.asarray(slack, dtype=float) / 3600.0 - need_h, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w_before = np.where(shrink > 1e-9, eff_speed * room_h / np.maximum(shrink, 1e-9), np.inf)
    rest = np.maximum(work_h - w_before, 0.0)
    blended = a_bid * np.minimum(w_before, work_h) + b_bid + od_a * rest + np.where(rest > 0, od_b, 0.0)
    return np.where(w_before >= work_h, plain, blended)


def job_modes(job: JobView, t: Terms, now: float, params: PolicyParams) -> tuple[bool, bool, float, str]:
    """(bid allowed, on demand allowed, slack, why) for one job."""
    od_speed = float(t.speed.max()) if len(t.speed) else 1.0
    slack = slack_s(now, job.deadline_at, job.remaining_work_hours, od_speed, params, job.checkpoint_cost_s)
    if job.interruptible == "never":
        return False, True, slack, "the job asks for on demand only"
    if job.interruptible == "always":
        return True, False, slack, "the job asks for interruptible only"
    tau = t.typical_tau_bid if t.typical_tau_bid is not None else params.max_ckpt_interval_s
    if not interruptible_allowed(slack, tau, params, job.checkpoint_cost_s):
        return False, True, slack, f"slack {slack / 3600:.2f} h no longer covers an interruption: on demand to the end"
    if should_escalate_to_on_demand(job.interruption_times, now, params):
        return False, True, slack, (f"{params.escalate_after} interruptions within "
                                    f"{params.escalate_window_s / 3600:.0f} h: escalated to on demand")
    return True, True, slack, "lowest expected cost among feasible offers"


def od_fallback(t: Terms, cost_od: np.ndarray) -> tuple[float, float, float]:
    """(per-work cost, fixed cost, speed) of the best on-demand offer to finish on, and the fastest speed."""
    finite = np.isfinite(cost_od)
    if not finite.any():
        return math.inf, math.inf, float(t.speed.max()) if len(t.speed) else 1.0
    best = int(np.argmin(np.where(finite, t.a_od, np.inf)))
    return float(t.a_od[best]), float(t.b_od[best]), float(t.speed.max())


def deadline_aware_bid_cost(job: JobView, t: Terms, slack: float, cost_od: np.ndarray,
                             params: PolicyParams) -> np.ndarray:
    od_a, od_b, s_od = od_fallback(t, cost_od)
    return bid_cost_with_deadline(t.a_bid, t.b_bid, t.speed, t.factor_bid, t.tau_bid, job.remaining_work_hours,
                                  slack, job.checkpoint_cost_s, params, od_a, od_b, s_od)


def on_time_only(cost_od: np.ndarray, job: JobView, t: Terms, now: float, params: PolicyParams,
                  taken: np.ndarray) -> np.ndarray:
    """On demand is the deadline's safety net: when some free offer finishes in time, drop those that do not."""
    if job.deadline_at is None or not len(cost_od):
        return cost_od
    run_s = job.remaining_work_hours * 3600.0 / t.speed * (1.0 + job.checkpoint_cost_s / t.tau_od)
    meets = now + params.restart_overhead_s + run_s <= job.deadline_at
    if (meets & np.isfinite(cost_od) & ~taken).any():
        return np.where(meets, cost_od, np.inf)
    return cost_od


def job_costs(job: JobView, t: Terms, dph: np.ndarray, now: float, params: PolicyParams,
              taken: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, bool, bool, float, str]:
    """Per offer of `t`, the job's expected cost as a bid and on demand under its deadline, price cap and
    modes: (cost_bid, cost_od, bid allowed, on demand allowed, slack, why). `taken`: offers already bought
    this pass (on demand keeps a late offer only when no free one is on time). Shared by the allocator and
    `vastfleet offers`, so both rank alike."""
    bid_ok, od_ok, slack, why = job_modes(job, t, now, params)
    w = job.remaining_work_hours
    cap = job.max_price_per_hour
    cost_od = np.where(od_ok & (dph <= cap), t.a_od * w + t.b_od, np.inf)
    cost_od = on_time_only(cost_od, job, t, now, params, np.zeros(len(dph), dtype=bool) if taken is None else taken)
    cost_bid = np.where(bid_ok & (t.bid <= cap), deadline_aware_bid_cost(job, t, slack, cost_od, params), np.inf)
    return cost_bid, cost_od, bid_ok, od_ok, slack, why
