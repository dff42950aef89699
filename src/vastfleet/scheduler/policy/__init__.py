"""The scheduling policy: pure functions over plain data, shared by the live loop and the benchmark.

Never does I/O and imports no redis, vastai or boto3. Entry points:
  decide_placements(jobs, offers, fleet, now, params) -> list[Placement]
  on_outbid(job, paused_offer, other_offers, fleet, now, params) -> Decision
  checkpoint_interval(checkpoint_cost_s, hazard_per_hour) -> seconds
  should_escalate_to_on_demand(interruption_times, now, params) -> bool
  lower_running_bid(job, here, current_bid, fleet, params) -> float | None
  rank_offers(job, table, fleet, now, params) -> Ranking   (for `vastfleet offers --explain`)
  best_wait(job, cost_now, od_fallback, future, fleet, now, params, reserved) -> (row, Wait) | None
"""

from vastfleet.scheduler.policy.allocate import decide_on_table, decide_placements
from vastfleet.scheduler.policy.bid import lower_running_bid, on_outbid, outbid_decision
from vastfleet.scheduler.policy.cadence import checkpoint_interval
from vastfleet.scheduler.policy.cost import Terms, option_terms
from vastfleet.scheduler.policy.deadline import interruptible_allowed, should_escalate_to_on_demand, slack_s
from vastfleet.scheduler.policy.explain import RankedOffer, Ranking, rank_offers
from vastfleet.scheduler.policy.filters import CHAIN, feasible
from vastfleet.scheduler.policy.fleet import FleetBudget, FleetGuard, Holdings, Rental
from vastfleet.scheduler.policy.hazard import FleetStats, hazards, rental_hazards
from vastfleet.scheduler.policy.types import (
    Decision,
    FutureOffers,
    JobView,
    OfferTable,
    Placement,
    PolicyParams,
    Wait,
    job_view_from_job,
)
from vastfleet.scheduler.policy.waiting import best_wait, held_until

__all__ = [
    "CHAIN",
    "Decision",
    "FleetBudget",
    "FleetGuard",
    "FleetStats",
    "FutureOffers",
    "Holdings",
    "JobView",
    "OfferTable",
    "Placement",
    "PolicyParams",
    "RankedOffer",
    "Ranking",
    "Rental",
    "Terms",
    "Wait",
    "best_wait",
    "checkpoint_interval",
    "decide_on_table",
    "decide_placements",
    "feasible",
    "hazards",
    "held_until",
    "interruptible_allowed",
    "job_view_from_job",
    "lower_running_bid",
    "on_outbid",
    "option_terms",
    "outbid_decision",
    "rank_offers",
    "rental_hazards",
    "should_escalate_to_on_demand",
    "slack_s",
]
