"""Deadlines (the Can't-Be-Late rule family) and escalation to on demand after repeated interruptions.

Interruptible capacity is used only while the slack -- the time left before the deadline minus the time an
on-demand run would need from now -- still covers one more interruption (a restart plus the work lost since
the last checkpoint) and a guard; after that, on demand to the end. Pure arithmetic, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

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
