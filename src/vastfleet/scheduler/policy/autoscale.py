"""The sweep autoscaler: how many trials run at once, and which stop, as a pure function of plain data.

    target = min(max_parallel, runnable, budget, market), raised toward what the deadline needs

* runnable: the trials started and not finished (sunk cost: they are always kept first) plus those the sweep
  may still start.
* budget: a new trial is admitted only while  spent + reserve + expected dollars to finish every running
  trial + the new trials' expected dollars  stays within the budget. Expected dollars come from the one cost
  model that places jobs (`cost.option_terms`, `deadline.job_costs`: price, expected preemptions, checkpoints,
  restarts), for the work a trial is expected to run: the pruning learned from the trials already finished
  (a survival curve over steps: the early-stopping rule's own rungs as a prior, then Kaplan-Meier over what
  happened). `reserve` is what the running instances bill while a stop takes effect.
* market: slots the sweep holds plus free slots whose expected trial cost is within `value_premium` of the
  cheapest (dearer capacity only when the deadline needs it), under the job's price cap.
* deadline: the parallelism at which the remaining expected work ends before the deadline.
A real overrun (the running trials alone are expected to pass the budget) stops the worst running trial at
its rung first, then the least advanced, until the projection fits; with the budget spent, all stop.
Never does I/O; never reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from vastfleet.scheduler.policy.cost import option_terms
from vastfleet.scheduler.policy.deadline import job_costs
from vastfleet.scheduler.policy.filters import feasible
from vastfleet.scheduler.policy.hazard import FleetStats
from vastfleet.scheduler.policy.types import JobView, OfferTable, PolicyParams

Limit = Literal["budget", "parallel", "market", "runnable", "deadline"]
TIE_ORDER: tuple[Limit, ...] = ("parallel", "runnable", "budget", "market")  # the name given on a tie


@dataclass(frozen=True)
class EarlyStopModel:
    type: Literal["asha", "median", "none"] = "none"
    min_step: int | None = None
    max_step: int | None = None
    reduction_factor: int = 3


@dataclass(frozen=True)
class TrialRecord:
    """What one trial taught about pruning: the last step it reached and whether it ended there early."""

    step: float
    stopped_early: bool  # pruned, failed or stopped; False: complete, or still running (censored)


@dataclass(frozen=True)
class RunningTrial:
    number: int
    step: float = 0.0  # the last step it reported
    placed: bool = False  # holds an instance (or one is being created for it)
    rate_usd_h: float = 0.0  # what its instance bills now (0: none yet)
    speed: float = 1.0  # its instance's speed against the reference GPU
    rank: float | None = None  # 0 best .. 1 worst among the trials at its rung; None: no rung reached
    started_at: float = 0.0  # when the sweep started it (its job was submitted)


@dataclass(frozen=True)
class SweepNow:
    max_parallel: int
    trials_left: int  # trials the sweep may still start
    work_hours: float  # one full trial's work at the reference GPU
    budget_usd: float | None = None
    spent_usd: float = 0.0
    burn_usd_h: float = 0.0  # the sweep's instances' $/h now
    reserve_s: float = 60.0  # how long a stop takes to end billing (driver pass + scheduler pass + destroy)
    deadline_at: float | None = None
    running: tuple[RunningTrial, ...] = ()
    history: tuple[TrialRecord, ...] = ()  # every trial that reported, finished or not
    early_stop: EarlyStopModel = EarlyStopModel()
    held_elsewhere: int = 0  # instances still held by trials that are over (their teardown is in flight)


@dataclass(frozen=True)
class MarketView:
    """Free slots of the market for one trial, cheapest first: expected dollars and wall hours of the expected
    work, from the cost model; `per_work_h` prices work whose rental is unknown; `factor` is the expected wall
    hours per work hour at speed 1 (checkpoints and interruptions)."""

    cost_usd: np.ndarray
    hours: np.ndarray
    per_work_h: float
    factor: float = 1.0
    wall_per_work: float = 1.0  # expected wall hours per work-hour on the cheapest slot (speed, interruptions)


@dataclass(frozen=True)
class AutoscaleParams:
    value_premium: float = 0.5  # free slots dearer than (1 + this) x the cheapest count only for a deadline
    survivor_slack: float = 0.3  # a trial past the last rung keeps within this share of its expected pace
    prior_trials: float = 2.0  # weight of the early-stopping rule's prior, in trials
    grid: int = 200  # resolution of the survival curve over [0, max_step]


@dataclass(frozen=True)
class Scale:
    target: int  # trials to run at once
    binding: Limit
    admit: int  # new trials to start now
    stop: tuple[int, ...]  # running trials to stop now (budget), worst first
    expected_trial_usd: float  # mean expected dollars of a new trial at this parallelism
    expected_trial_hours: float  # its expected wall hours
    running_usd: float  # expected dollars to finish every running trial
    projected_usd: float  # spent + reserve + running + the trials admitted now
    work_share: float  # expected share of max_step a new trial runs (pruning learned)
    exhausted: bool  # nothing runs and the budget affords no further trial: the sweep starts no more
    reason: str
    limits: dict[str, int] = field(default_factory=dict)


# --- pruning learned: the survival curve ------------------------------------------------------------------


def prior_survival(stop: EarlyStopModel, x: np.ndarray) -> np.ndarray:
    """Share of trials still running at each x (a fraction of max_step) under the rule alone: ASHA keeps one
    in `reduction_factor` at each rung min_step * rf^k; the median rule stops about half after warm-up."""
    if stop.type == "none" or not stop.max_step or not stop.min_step:
        return np.ones_like(x)
    r0 = stop.min_step / stop.max_step
    if stop.type == "median":
        return np.where(x <= r0, 1.0, 0.5)
    eta = float(stop.reduction_factor)
    # rungs passed before x: the largest k with r0 * eta^k < x
    with np.errstate(divide="ignore"):
        passed = np.where(x > r0, np.floor(np.log(np.maximum(x, 1e-12) / r0) / math.log(eta) - 1e-9) + 1, 0)
    return np.power(eta, -passed)


def survival(stop: EarlyStopModel, history: tuple[TrialRecord, ...], params: AutoscaleParams) -> tuple[np.ndarray, np.ndarray]:
    """(x, S(x)): the prior mixed with the Kaplan-Meier estimate of what the sweep's trials did."""
    x = np.linspace(0.0, 1.0, params.grid + 1)
    prior = prior_survival(stop, x)
    if not stop.max_step or not history:
        return x, prior
    t = np.clip(np.array([h.step / stop.max_step for h in history]), 0.0, 1.0)
    event = np.array([h.stopped_early for h in history])
    km = np.ones_like(x)
    s = 1.0
    for at in np.unique(t[event]):
        at_risk = int((t >= at).sum())
        died = int(((t == at) & event).sum())
        if at_risk:
            s *= 1.0 - died / at_risk
        km[x > at] = s
    n = float(len(history))
    return x, (params.prior_trials * prior + n * km) / (params.prior_trials + n)


def remaining_share(x: np.ndarray, s: np.ndarray, at: float) -> float:
    """Expected share of max_step still to run for a trial that reached `at` (a fraction), given S."""
    at = min(max(at, 0.0), 1.0)
    i = int(np.searchsorted(x, at, side="right")) - 1
    alive = float(s[max(i, 0)])
    if alive <= 0:
        return 0.0
    dx = x[1] - x[0]
    tail = float(s[i + 1:].sum() * dx) + (x[min(i + 1, len(x) - 1)] - at) * alive
    return max(tail / alive, 0.0)


# --- the market for one trial ------------------------------------------------------------------------


def market_view(job: JobView, table: OfferTable, fleet: FleetStats, now: float, params: PolicyParams,
                work_h: float, capacity: np.ndarray | None = None) -> MarketView:
    """Free slots for a trial of `work_h` expected work-hours: each machine counts its GPUs over the trial's
    (its listed bundle), priced at its cheapest fitting offer, bid or on demand, as the allocator prices them.
    `capacity` (per offer of `table`): how many trials an offer takes at once instead (a cloud zone)."""
    idx = np.flatnonzero(feasible(job, table, now))
    if idx.size == 0:
        return MarketView(np.zeros(0), np.zeros(0), math.inf)
    sub = table.take(idx)
    t = option_terms(sub, fleet, params, ref_dlperf=job.reference_dlperf(), ckpt_s=job.checkpoint_cost_s,
                     checkpoints=job.checkpoints, price_cap=job.max_price_per_hour)
    sized = replace(job, remaining_work_hours=max(work_h, 1e-6))
    cost_bid, cost_od, *_ = job_costs(sized, t, sub.dph, now, params)
    bid = cost_bid <= cost_od
    cost = np.where(bid, cost_bid, cost_od)
    factor = np.where(bid, t.factor_bid, t.factor_od)
    hours = work_h / t.speed * factor + params.restart_overhead_s / 3600.0
    per_work = np.where(bid, t.a_bid, t.a_od)
    machines = np.asarray(sub.machine)
    slots_c: list[float] = []
    slots_h: list[float] = []
    slots_w: list[float] = []
    for m in np.unique(machines):
        on = np.flatnonzero((machines == m) & np.isfinite(cost))
        if on.size == 0:
            continue
        best = on[np.argmin(cost[on])]
        slots = max(int(sub.num_gpus[on].max()) // max(job.num_gpus, 1), 1) if capacity is None \
            else int(np.asarray(capacity)[idx[on]].sum())
        slots_c += [float(cost[best])] * slots
        slots_h += [float(hours[best])] * slots
        slots_w += [float(factor[best] / t.speed[best])] * slots
    order = np.argsort(slots_c, kind="stable")
    finite = np.isfinite(per_work)
    return MarketView(np.array(slots_c)[order], np.array(slots_h)[order],
                      float(per_work[finite].min()) if finite.any() else math.inf,
                      float(np.median(factor[np.isfinite(factor)])) if np.isfinite(factor).any() else 1.0,
                      float(np.array(slots_w)[order][0]) if slots_w else 1.0)


# --- survivors: the trials the sweep waits for --------------------------------------------------------


def last_rung(stop: EarlyStopModel) -> int | None:
    """The last step at which the early-stopping rule may still stop a trial (None: it never stops one)."""
    if stop.type == "none" or not stop.min_step or not stop.max_step:
        return None
    if stop.type == "median":
        return stop.min_step
    rung = stop.min_step
    while rung * stop.reduction_factor < stop.max_step:
        rung *= stop.reduction_factor
    return rung


def survivor_deadline(trial: RunningTrial, state: SweepNow, market: MarketView, restart_overhead_s: float,
                      params: AutoscaleParams | None = None) -> float | None:
    """A trial past the last rung runs to its end, and the sweep waits for its survivors. Each gets a deadline:
    its start plus `1 + survivor_slack` times the wall time the cost model expects of a whole trial (a boot,
    then the work at the cheapest slot's speed, interruptions included). While it keeps that pace it stays on
    interruptible capacity; when interruptions make it fall behind, the scheduler's deadline rule (Can't Be
    Late) moves it to on demand. None while the trial may still be stopped, or without early stopping."""
    p = params or AutoscaleParams()
    rung, max_step = last_rung(state.early_stop), state.early_stop.max_step
    if rung is None or not max_step or trial.step <= rung:
        return None
    expected_s = restart_overhead_s + state.work_hours * 3600.0 * market.wall_per_work
    return trial.started_at + expected_s * (1.0 + p.survivor_slack)


# --- the decision ------------------------------------------------------------------------------------


def _running_usd(trial: RunningTrial, work_h: float, market: MarketView) -> float:
    if trial.rate_usd_h > 0:
        return work_h / max(trial.speed, 1e-9) * trial.rate_usd_h * max(market.factor, 1.0)
    return work_h * market.per_work_h if math.isfinite(market.per_work_h) else 0.0


def _badness(trial: RunningTrial, max_step: float) -> tuple[float, float]:
    """Worst first: the worst rank at its rung, then (no rung reached) the least progress."""
    return (-(trial.rank if trial.rank is not None else 1.01), trial.step / max(max_step, 1.0))


def decide(state: SweepNow, market: MarketView, now: float, params: AutoscaleParams | None = None) -> Scale:
    p = params or AutoscaleParams()
    stop = state.early_stop
    x, s = survival(stop, state.history, p)
    share = remaining_share(x, s, 0.0) if stop.max_step else 1.0
    max_step = float(stop.max_step or 1)
    running = list(state.running)
    rem = {r.number: _running_usd(r, state.work_hours * (remaining_share(x, s, r.step / max_step)
                                                          if stop.max_step else 1.0), market) for r in running}
    reserve = state.burn_usd_h * state.reserve_s / 3600.0
    running_usd = sum(rem.values())
    committed = state.spent_usd + reserve + running_usd

    # a real overrun: stop the worst running trials until the projection fits
    stops: list[int] = []
    held_by_stops = 0
    budget = state.budget_usd
    if budget is not None:
        if state.spent_usd + reserve >= budget:
            stops = [r.number for r in sorted(running, key=lambda r: _badness(r, max_step))]
        elif committed > budget:
            for r in sorted(running, key=lambda r: _badness(r, max_step)):
                if committed <= budget:
                    break
                stops.append(r.number)
                committed -= rem[r.number]
        held_by_stops = sum(r.placed for r in running if r.number in stops)  # they bill until torn down
        running = [r for r in running if r.number not in stops]
        running_usd = sum(rem[r.number] for r in running)
        committed = state.spent_usd + reserve + running_usd
    n_run = len(running)
    placed = sum(r.placed for r in running)

    costs = market.cost_usd
    affordable = len(costs)
    gated = costs
    if budget is not None:
        # a new trial also adds its instance's reserve: what it would bill while a stop takes effect
        rate = np.where(market.hours > 0, costs / np.maximum(market.hours, 1e-9), 0.0)
        gated = costs + rate * state.reserve_s / 3600.0
        affordable = int(np.searchsorted(np.cumsum(gated), max(budget - committed, 0.0) + 1e-12, side="right"))
    cheap = costs[0] * (1.0 + p.value_premium) if len(costs) else 0.0
    good = int((costs <= cheap).sum()) if len(costs) else 0
    limits: dict[str, int] = {
        "parallel": state.max_parallel,
        "runnable": n_run + state.trials_left,
        "budget": n_run + affordable if budget is not None else 10**9,
        "market": placed + good,
    }
    binding: Limit = min(TIE_ORDER, key=lambda k: (limits[k], TIE_ORDER.index(k)))
    target = limits[binding]
    need = None
    if state.deadline_at is not None:
        left_h = (state.deadline_at - now) / 3600.0
        typical_h = float(np.mean(market.hours[: max(state.max_parallel, 1)])) if len(market.hours) else 0.0
        work_left = sum(state.work_hours * remaining_share(x, s, r.step / max_step) / max(r.speed, 1e-9)
                        for r in running) * max(market.factor, 1.0) + state.trials_left * typical_h
        if left_h <= 0:
            need = -1
        elif work_left > 0:
            need = math.ceil(work_left / left_h)
            limits["deadline"] = need
            if need > target and binding == "market":
                raised = min(limits["parallel"], limits["runnable"], limits["budget"], placed + len(costs), need)
                if raised > target:
                    target, binding = raised, "deadline"
    slots = n_run + state.held_elsewhere
    admit = max(0, min(target - slots, state.trials_left, affordable))
    if need == -1:
        admit, binding = 0, "deadline"
    new = costs[: max(target - n_run, 0)] if len(costs) else costs
    expected = float(new.mean()) if len(new) else (float(costs[0]) if len(costs) else 0.0)
    new_h = market.hours[: max(target - n_run, 0)]
    hours = float(new_h.mean()) if len(new_h) else (float(market.hours[0]) if len(market.hours) else 0.0)
    projected = committed + float(gated[:admit].sum())
    # only once nothing bills any more: instances still being torn down hold a reserve that is about to free
    exhausted = (budget is not None and n_run == 0 and state.held_elsewhere + held_by_stops == 0
                 and state.trials_left > 0 and affordable == 0 and len(costs) > 0)
    reason = _reason(binding, target, limits, need, stops, exhausted, budget, committed, costs)
    return Scale(target=max(target, 0), binding=binding, admit=admit, stop=tuple(stops), expected_trial_usd=expected,
                 expected_trial_hours=hours, running_usd=running_usd, projected_usd=projected, work_share=share,
                 exhausted=exhausted, reason=reason, limits=limits)


def _reason(binding: Limit, target: int, limits: dict[str, int], need: int | None, stops: list[int],
            exhausted: bool, budget: float | None, committed: float, costs: np.ndarray) -> str:
    if need == -1:
        return "the deadline has passed: no new trial starts"
    if exhausted:
        return (f"budget: ${committed:.4f} spent and reserved of ${budget:.4f}; the cheapest next trial is expected"
                f" to cost ${float(costs[0]):.4f}: no further trial starts")
    text = {
        "parallel": f"max_parallel {limits['parallel']}",
        "runnable": f"{limits['runnable']} trials left to run",
        "budget": f"the budget affords {limits['budget']} at once (${committed:.4f} committed of ${budget or 0:.4f})",
        "market": f"{limits['market']} good-value slots in the market",
        "deadline": f"the deadline needs {limits.get('deadline', target)} at once",
    }[binding]
    if need is not None and need > target and binding != "deadline":
        text += f" (the deadline needs {need})"
    if stops:
        text += f"; stopping {len(stops)} running trial(s) to stay within the budget"
    return f"{target} at once: {text}"
