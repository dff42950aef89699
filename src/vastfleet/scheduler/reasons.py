"""What the reconcile loop tells about what it did not do: why a pending job got no placement, and which
instances teardown keeps. Both are said once, when they start and when they change in more than their
figures, never every pass.

`PendingReasons.explain` writes the reason on the pending job's record through the JobStore (no state
change) and, when it changes, one `unplaced` event and one log line: which feasibility filter removed how
many offers (`policy.explain.unplaced_reason`), or why the policy chose to wait. A job whose own search
found nothing is explained from a search of the whole market, shared by every such job and kept a few
minutes: the counts are an explanation, not a decision, and cost no call per pass.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from vastfleet.errors import IllegalTransition, NotFound, StaleEpoch, VastfleetError
from vastfleet.logs import event
from vastfleet.market.protocol import Marketplace
from vastfleet.queue import JobStore
from vastfleet.scheduler.labels import parse_label
from vastfleet.scheduler.plan import Create, Plan, Snapshot
from vastfleet.scheduler.policy import OfferTable, Wait, job_view_from_job
from vastfleet.scheduler.policy.explain import unplaced_reason
from vastfleet.spec.job import Job, JobState
from vastfleet.spec.jobspec import Interruptible
from vastfleet.spec.market import BidKind, Offer, OfferQuery

log = logging.getLogger("vastfleet.scheduler.loop")

WHOLE_MARKET_LIMIT = 500  # offers read to explain a job whose own search found none
WHOLE_MARKET_TTL_S = 300.0  # how long that listing explains before it is read again


def shape(reason: str) -> str:
    """A reason without its figures: a count or a price that moves is not news worth an event."""
    return re.sub(r"\d+(\.\d+)?", "#", reason)


class TeardownWaits:
    """Instances teardown keeps (`Plan.waiting`): logged when kept and when the reason changes."""

    def __init__(self, prefix: str, store: JobStore | None = None) -> None:
        self.prefix = prefix
        self.store = store  # each wait is an event on its job's history too
        self._logged: dict[int, str] = {}  # instance -> the shape of the reason last logged

    def log(self, snap: Snapshot, plan: Plan) -> None:
        shapes = {inst: shape(why) for inst, why in plan.waiting.items()}
        owners = {i.id: parse_label(i.label, self.prefix) for i in snap.instances}
        for inst, why in plan.waiting.items():
            if self._logged.get(inst) != shapes[inst]:
                owner = owners.get(inst)
                event(log, "teardown waits", why, job=owner[0] if owner else None,
                      epoch=owner[1] if owner else None, instance=inst)
                if owner is not None and self.store is not None:
                    try:
                        self.store.note(owner[0], "teardown_wait", why, {"instance_id": inst})
                    except VastfleetError:  # the job is gone (or set aside): the log still tells
                        pass
        self._logged = shapes


class PendingReasons:
    def __init__(self, store: JobStore, prefix: str) -> None:
        self.store = store
        self.prefix = prefix
        self._whole: dict[BidKind, tuple[float, list[Offer]]] = {}  # kind -> (read at, the whole market)

    def explain(self, market: Marketplace, snap: Snapshot, plan: Plan, now: float, waits: Iterable[Wait],
                excluded: frozenset[int]) -> None:
        placed = {c.job_id for c in plan.of(Create)}
        waiting = {w.job_id: w.reason for w in waits}
        for job_id, found in snap.offers.items():
            job = snap.jobs.get(job_id)
            if job is None or job.state != JobState.PENDING or job_id in placed:
                continue
            reason = waiting.get(job_id)
            if reason is not None:
                reason = f"waiting for cheaper capacity: {reason}"
            else:
                view = job_view_from_job(job, now, excluded_hosts=excluded)
                offers = list(found) or self._everything(market, job, now)
                reason = unplaced_reason(view, OfferTable.from_offers(offers, view.disk_gb), now,
                                         searched_all=not found)
            self._set(job, reason)

    def _everything(self, market: Marketplace, job: Job, now: float) -> list[Offer]:
        kind = BidKind.on_demand if job.spec.interruptible == Interruptible.never else BidKind.bid
        cached = self._whole.get(kind)
        if cached is not None and 0 <= now - cached[0] < WHOLE_MARKET_TTL_S:
            return cached[1]
        try:
            offers = market.search_offers(OfferQuery(kind=kind, verified=None, limit=WHOLE_MARKET_LIMIT))
        except VastfleetError as exc:
            log.warning("offer search of the whole market failed: %s", exc)
            return []
        self._whole[kind] = (now, offers)
        return offers

    def _set(self, job: Job, reason: str) -> None:
        if reason == job.reason:
            return
        try:
            current = self.store.get(job.id)  # a user may have cancelled it since the snapshot: keep their reason
            if current.state != JobState.PENDING or current.epoch != job.epoch or current.reason == reason:
                return
            self.store.update(job.id, expected_epoch=job.epoch, reason=reason)
            if shape(reason) != shape(current.reason):
                self.store.note(job.id, "unplaced", reason)
                event(log, "unplaced", reason, job=job.id, epoch=job.epoch)
        except (NotFound, StaleEpoch, IllegalTransition):
            pass  # it moved on: the next pass reads it afresh
