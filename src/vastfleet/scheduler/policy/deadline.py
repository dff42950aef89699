"""Deadlines (the Can't-Be-Late rule family) and escalation to on demand after repeated interruptions.

Interruptible capacity is used only while the slack -- the time left before the deadline minus the time an
on-demand run would need from now -- still covers one more interruption (a restart plus the work lost since
the last checkpoint) and a guard; after that, on demand to the end. Pure arithmetic, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vastfleet.scheduler.policy.types import PolicyParams


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
