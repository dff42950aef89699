"""The one decision step: a snapshot of plain data in, typed decisions out. The live loop and the benchmark's
replay both call it, each through a thin translator of its own world (`policy_adapter.PolicyPlacer` for the
live loop, `sim.replay.ours.Ours` for the replay); learning (`FleetStats`) happens outside, after the step.

For each attempt the fleet holds, in order:
  paused bid        raise its bid in place or move, by expected cost (`outbid_decision`);
  running bid       move to on demand once the deadline's slack no longer covers an interruption (gracefully:
                    checkpoint first); on a rebalance step, move to a clearly cheaper offer; else lower its
                    bid when the lowest running bid fell (vast's change bid, no restart);
  running on demand on a rebalance step, go back to bids when the storm of interruptions is over and a bid
                    finishes clearly cheaper;
then every job without an attempt (and those just moved) goes through the one allocator, which may have it
wait for an offer expected back. A job moved to on demand for its deadline stays there (`pinned`).
Pure: no I/O, time is an argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from vastfleet.scheduler.policy.allocate import decide_on_table
from vastfleet.scheduler.policy.bid import lower_running_bid, outbid_decision
from vastfleet.scheduler.policy.cost import young_daly
from vastfleet.scheduler.policy.deadline import interruptible_allowed, should_escalate_to_on_demand, slack_s
from vastfleet.scheduler.policy.filters import feasible
from vastfleet.scheduler.policy.fleet import FleetBudget, Holdings
from vastfleet.scheduler.policy.hazard import FleetStats
from vastfleet.scheduler.policy.types import FutureOffers, JobView, OfferTable, PolicyParams, Wait

REBID_MIN_DROP = 0.05  # lower a running bid only when it saves at least this share (each change is a call)
HYSTERESIS = 0.08  # a move to a cheaper offer must save this share of the expected cost to stay
BACK_TO_BID = 0.8  # an escalated job returns to bids when a bid finishes under this share of staying on demand
PLACED_TAU_S = 1800.0  # the checkpoint interval a deadline check assumes for a fresh placement


@dataclass(frozen=True)
class Held:
    """An attempt the fleet holds: its job, and its offer as one row (the lowest bid that runs there now in
    `min_bid`, its on-demand price in `dph`)."""

    job: JobView
    offer: OfferTable
    kind: Literal["bid", "on_demand"]
    bid: float | None  # what it pays as a bid; None on demand
    paused: bool
    tau_s: float  # its checkpoint interval
    pinned: bool = False  # moved to on demand for its deadline: stays there


@dataclass(frozen=True)
class StepInput:
    waiting: Sequence[JobView]  # jobs with no attempt
    held: Sequence[Held]
    offers: OfferTable  # rentable now
    fleet: FleetStats  # frozen for the step
    now: float
    params: PolicyParams
    future: FutureOffers | None = None  # offers expected back
    holdings: Holdings | None = None  # our rentals, for the fleet guard
    budget: FleetBudget | None = None  # the fleet's caps
    rebalance: bool = False  # this step may move running attempts (cheaper offer, back to bids)
    pinned: frozenset[str] = frozenset()  # waiting jobs that go on demand to the end


@dataclass(frozen=True)
class Place:
    job_id: str
    offer_id: int
    machine_id: int
    kind: Literal["bid", "on_demand"]
    bid: float | None
    expected_cost: float
    tau_s: float
    reason: str
    on_demand_price: float | None = None
    pin: bool = False  # on demand to the end (the deadline's slack is spent)


@dataclass(frozen=True)
class ChangeBid:
    job_id: str
    bid: float
    restart: bool  # a paused attempt starts again; a running one keeps running
    reason: str


@dataclass(frozen=True)
class Move:
    """Give the attempt's rental up; the job is placed again (here in the replay; after its checkpoint live)."""

    job_id: str
    to: Literal["elsewhere", "on_demand", "cheaper", "bids"]
    graceful: bool  # checkpoint first: nothing is lost
    reason: str
    pin: bool = False


Decision = Place | ChangeBid | Move | Wait


@dataclass
class Step:
    decisions: list[Decision] = field(default_factory=list)

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [d for d in self.decisions if isinstance(d, kind)]


def _held_slack(h: Held, offers: OfferTable, now: float, params: PolicyParams) -> float:
    """Slack on the fastest fitting offer rentable now, or its own: not the fastest listed anywhere."""
    job = h.job
    if job.deadline_at is None:
        return float("inf")
    mask = feasible(replace(job, max_price_per_hour=float("inf"), excluded_hosts=frozenset()), offers, now) \
        if len(offers) else np.zeros(0, dtype=bool)
    speeds = [float(h.offer.dlperf[0])] + offers.dlperf[mask].tolist()
    speed = max(speeds) / job.reference_dlperf()
    return slack_s(now, job.deadline_at, job.remaining_work_hours, speed, params, 0.0, float("inf"))


def _stay_cost(h: Held, inp: StepInput) -> float | None:
    here = h.offer.take(np.array([0]))
    here.min_bid = np.array([h.bid if h.bid is not None else h.offer.min_bid[0]])
    stay = decide_on_table([h.job], here, inp.fleet, inp.now, replace(inp.params, margins=(0.0,)),
                           first_overhead_s=0.0, bandwidth=False)
    return stay[0].expected_cost if stay and stay[0].kind == "bid" else None


def decide_step(inp: StepInput) -> Step:
    p, now = inp.params, inp.now
    out = Step()
    waiting: list[JobView] = list(inp.waiting)
    pinned = set(inp.pinned)
    # held attempts in one order whoever lists them (the live loop lists paused ones first, the replay its runs):
    # the jobs they release are placed in this order
    for h in sorted(inp.held, key=lambda h: (-h.job.priority, h.job.job_id)):
        jid = h.job.job_id
        if h.kind == "on_demand":
            if not h.pinned and inp.rebalance and _back_to_bid(h, inp):
                out.decisions.append(Move(jid, "bids", True, "the storm is over: a bid finishes clearly cheaper"))
                waiting.append(h.job)
            continue
        tau = float(young_daly(h.job.checkpoint_cost_s, np.array([0.05]), p)[0]) if h.paused else h.tau_s
        # (a job that asks for interruptible only stays on bids whatever its deadline: the user's word)
        if h.job.interruptible != "always" and not interruptible_allowed(
                _held_slack(h, inp.offers, now, p), tau, p, h.job.checkpoint_cost_s):
            out.decisions.append(Move(jid, "on_demand", not h.paused, "the deadline's slack no longer covers an"
                                      " interruption: on demand to the end", pin=True))
            pinned.add(jid)
            waiting.append(h.job)
            continue
        if not h.paused and inp.rebalance and len(inp.offers):
            stay = _stay_cost(h, inp)
            moves = decide_on_table([h.job], inp.offers, inp.fleet, now, p, holdings=inp.holdings)
            if stay is not None and moves and moves[0].expected_cost < (1.0 - HYSTERESIS) * stay:
                out.decisions.append(Move(jid, "cheaper", True, f"offer {moves[0].offer_id} finishes for"
                                          f" ${moves[0].expected_cost:.4f}, ${stay:.4f} to stay"))
                waiting.append(h.job)
                continue
        if h.paused:
            d = outbid_decision(h.job, h.offer, inp.offers, inp.fleet, now, p)
            if d.action == "raise" and d.bid is not None:
                out.decisions.append(ChangeBid(jid, d.bid, True, d.reason))
            else:
                out.decisions.append(Move(jid, "elsewhere", False, d.reason))
                waiting.append(h.job)
            continue
        if p.lower_bids and h.bid is not None and h.offer.min_bid[0] < h.bid:
            lower = lower_running_bid(h.job, h.offer, h.bid, inp.fleet, p)
            if lower is not None and lower <= h.bid * (1.0 - REBID_MIN_DROP):
                out.decisions.append(ChangeBid(jid, lower, False, f"the lowest running bid fell to"
                                               f" ${float(h.offer.min_bid[0]):.4f}/h: no restart"))
    if waiting and len(inp.offers):
        waits: list[Wait] = []
        views = [replace(j, interruptible="never") if j.job_id in pinned else j for j in waiting]
        placed = decide_on_table(views, inp.offers, inp.fleet, now, p, future=inp.future, waits=waits,
                                 holdings=inp.holdings, budget=inp.budget)
        for pl in placed:
            view = next(v for v in views if v.job_id == pl.job_id)
            pin = pl.job_id in pinned or (pl.kind == "on_demand" and not interruptible_allowed(
                _fresh_slack(view, inp), PLACED_TAU_S, p, view.checkpoint_cost_s))
            od = pl.terms.get("on_demand_per_hour")
            out.decisions.append(Place(pl.job_id, pl.offer_id, pl.machine_id, pl.kind, pl.bid, pl.expected_cost,
                                       float(pl.terms.get("checkpoint_interval_s", PLACED_TAU_S)), pl.reason,
                                       float(od) if isinstance(od, float) else None, pin))
        out.decisions.extend(waits)
    return out


def _fresh_slack(job: JobView, inp: StepInput) -> float:
    if job.deadline_at is None or not len(inp.offers):
        return float("inf")
    mask = feasible(replace(job, max_price_per_hour=float("inf"), excluded_hosts=frozenset()), inp.offers, inp.now)
    if not mask.any():
        return float("inf")
    speed = float(inp.offers.dlperf[mask].max()) / job.reference_dlperf()
    return slack_s(inp.now, job.deadline_at, job.remaining_work_hours, speed, inp.params, 0.0, float("inf"))


def _back_to_bid(h: Held, inp: StepInput) -> bool:
    """An escalated job returns to interruptible capacity once the storm is over and a bid pays clearly."""
    if should_escalate_to_on_demand(h.job.interruption_times, inp.now, inp.params) or not len(inp.offers):
        return False
    speed = float(h.offer.dlperf[0]) / h.job.reference_dlperf()
    od_left = float(h.offer.dph[0]) * h.job.remaining_work_hours / max(speed, 1e-9)
    for pl in decide_on_table([replace(h.job, interruptible="auto")], inp.offers, inp.fleet, inp.now, inp.params,
                              holdings=inp.holdings):
        return pl.kind == "bid" and pl.expected_cost < BACK_TO_BID * od_left
    return False
