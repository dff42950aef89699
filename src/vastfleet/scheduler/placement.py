"""`SimplePlacer`: the stand-in policy behind the `Placer` protocol, for tests of the pass and as a reference.

It places each pending job on the cheapest offer the policy's own feasibility filters accept, as a bid over
`min_bid` when the spec allows interruptible capacity and that is cheaper, never over GPUs the fleet holds,
never above the offer's on-demand price or the job's cap, within the fleet's caps; a paused attempt moves
once the pass asks (no raise); running attempts are left alone. The bidding policy
(`policy_adapter.PolicyPlacer`) answers the same protocol with the decision step the benchmark measures.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from vastfleet.scheduler.plan_types import PolicyRequest, Snapshot
from vastfleet.scheduler.policy.filters import feasible
from vastfleet.scheduler.policy.fleet import FleetGuard
from vastfleet.scheduler.policy.hazard import FleetStats
from vastfleet.scheduler.policy.step import Decision, Move, Place
from vastfleet.scheduler.policy.types import OfferTable, Wait, job_view_from_job
from vastfleet.scheduler.supervise import Cause

BID_MARGIN = 1.25  # bid this much over min_bid: a thin margin is outbid at once


class SimplePlacer:
    def __init__(self) -> None:
        self.waits: list[Wait] = []
        self.excluded: frozenset[int] = frozenset()

    def decide(self, request: PolicyRequest) -> list[Decision]:
        out: list[Decision] = [Move(job.id, "elsewhere", False, "the stand-in never raises a bid: moving")
                               for job, _ in request.paused]
        rows = {o.id: o for found in request.offers.values() for o in found}
        biddable = {o.id for found in request.offers.values() for o in found if o.is_bid}
        table = OfferTable.from_offers(list(rows.values()))
        guard = FleetGuard(table, request.holdings)
        budget = request.budget
        for job in request.pending:  # already in priority order
            view = job_view_from_job(job, request.now, excluded_hosts=self.excluded)
            ids = {o.id for o in request.offers.get(job.id, ())}
            mask = feasible(view, table, request.now) & np.isin(table.ids, list(ids))
            best: tuple[float, int, float | None] | None = None
            for row in np.flatnonzero(mask).tolist():
                bid_ok = view.interruptible != "never" and not guard.no_bid[row] and int(table.ids[row]) in biddable
                bid = round(max(float(table.min_bid[row]) * BID_MARGIN, float(table.min_bid[row]) + 0.001), 4)
                choices: list[tuple[float, float | None]] = [(bid, bid)] if bid_ok and bid <= table.dph[row] else []
                if view.interruptible != "always" and not guard.no_od[row]:
                    choices.append((float(table.dph[row]), None))
                for price, as_bid in choices:
                    if price <= view.max_price_per_hour and (best is None or price < best[0]):
                        best = (price, int(row), as_bid)
            if best is None or not budget.fits(best[0]):
                continue
            price, i, as_bid = best
            budget.spend(price)
            guard.take(i)
            assert table.machine is not None
            kind: Literal["bid", "on_demand"] = "bid" if as_bid is not None else "on_demand"
            out.append(Place(job.id, int(table.ids[i]), int(table.machine[i]), kind, as_bid, price, 1800.0,
                             f"cheapest feasible: offer {int(table.ids[i])} {table.gpu[i]} {kind} ${price:.3f}/h",
                             float(table.dph[i])))
        return out

    def learn(self, snap: Snapshot, lost: Sequence[tuple[str, Cause]], now: float) -> None:
        return None  # the stand-in learns nothing

    def exclude_hosts(self, hosts: frozenset[int]) -> None:
        self.excluded = frozenset(hosts)

    def memory(self) -> FleetStats | None:
        return None

    def recall(self, stats: FleetStats) -> None:
        return None
