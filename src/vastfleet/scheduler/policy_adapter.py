"""The live loop's translator for the policy's one decision step (`policy.step.decide_step`), behind the
`Placer` protocol (`plan_types`): a pass's pending jobs, paused and running attempts become the step's
input (job views, held attempts with their machine as an offer, the offers searched, the fleet's holdings,
caps and frozen estimates); its decisions go back to `plan` as they come. The benchmark's replay calls the
same step through its own translator (`sim.replay.ours`), so what the benchmark measures is what rents.

`PolicyPlacer` keeps the fleet's observations (`FleetStats`: hosts seen, losses, outbids, and the hours our
own rentals ran on each host, which is all it can watch) in memory across passes; the loop keeps a copy in
Redis for the next leader (`exclusions.FleetMemory`). Pure apart from that memory: no I/O. It also answers
the agent API's checkpoint cadence (`checkpoint_interval`: Young/Daly from the hazard of the job's host),
takes the loop's live host exclusions into every JobView, and offers the machines our own running jobs hold
as `FutureOffers` (free when those jobs end, from their heartbeats' progress), so a pending job with slack
may wait for a clearly cheaper one (`policy.waiting`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from vastfleet.errors import BadInput
from vastfleet.scheduler.plan_types import PolicyRequest, Snapshot
from vastfleet.scheduler.policy import (
    FleetStats,
    FutureOffers,
    JobView,
    OfferTable,
    PolicyParams,
    Wait,
    checkpoint_interval,
    held_until,
    job_view_from_job,
    rental_hazards,
)
from vastfleet.scheduler.policy.cadence import DEFAULT_CHECKPOINT_COST_S
from vastfleet.scheduler.policy.step import Decision, Held, StepInput, decide_step
from vastfleet.scheduler.supervise import Cause
from vastfleet.spec.gpus import gpu_model
from vastfleet.spec.job import Job, JobState
from vastfleet.spec.market import Instance, Offer

log = logging.getLogger(__name__)


def merge_offers(offers: Mapping[str, Sequence[Offer]]) -> list[Offer]:
    """One row per ask: the bid search's row carries the live min_bid, the on-demand one the same dph_total."""
    rows: dict[int, Offer] = {}
    lists = {id(found): found for found in offers.values()}  # jobs asking alike share one list: merge it once
    for found in lists.values():
        for offer in found:
            have = rows.get(offer.id)
            if have is None or (offer.is_bid and not have.is_bid):
                rows[offer.id] = offer
    return list(rows.values())


def paused_offer(inst: Instance, job: Job) -> Offer | None:
    """The instance as an offer the policy can price (its machine's figures, the live min_bid). Its on-demand
    price is the one recorded at placement (an instance row shows only what it pays): no re-bid goes above it."""
    name = inst.gpu_name or job.spec.resources.gpu[0]
    try:
        model = gpu_model(name)
    except BadInput:
        return None
    n = inst.num_gpus or job.spec.resources.gpus
    return Offer(id=inst.id, machine_id=inst.machine_id or 0, host_id=inst.host_id or 0, gpu_name=model.name,
                 num_gpus=n, gpu_ram_gb=float(model.vram_gb), cuda_max_good=99.0, dlperf=model.dlperf * n,
                 dph_total=inst.dph_total, dph_base=job.offer_dph or 0.0,
                 min_bid=inst.min_bid or inst.bid_price or inst.dph_total,
                 disk_space=inst.disk_space or job.spec.resources.disk_gb, reliability=inst.reliability or 0.9,
                 verified=True, is_bid=True)


class PolicyPlacer:
    def __init__(self, params: PolicyParams | None = None) -> None:
        self.params = params or PolicyParams()
        self.fleet = FleetStats(watch_all=False)  # losses are seen only on our rentals: count only their hours
        self._last_now: float | None = None
        self._observed_at: float | None = None
        self._paused: set[int] = set()  # instances whose current pause is already counted as an outbid
        self.job_hazard: dict[str, float] = {}  # job id -> hazard per hour of its attempt, as of the last pass
        self.offers: Mapping[str, Sequence[Offer]] = {}
        self.excluded_hosts: frozenset[int] = frozenset()  # hosts placement must skip (set by the loop)
        # instance id -> (host, GPU model, reliability), replaced whole each pass: read by the API's threads
        self._where: dict[int, tuple[int, str, float]] = {}
        self._hazard: dict[int, tuple[float, float]] = {}  # instance id -> (as a bid, on demand), per pass
        self._held_by: list[tuple[Offer, float, str]] = []  # what our running jobs hold: (offer, free at, why)
        self.waits: list[Wait] = []  # the last placement's jobs that chose to wait, with the reason

    def exclude_hosts(self, hosts: frozenset[int]) -> None:
        """Called by the loop before each decision: the hosts excluded now."""
        self.excluded_hosts = frozenset(hosts)

    def memory(self) -> FleetStats:
        return self.fleet

    def recall(self, stats: FleetStats) -> None:
        self.fleet = stats

    def _tick(self, now: float) -> None:
        if self._last_now is not None and now > self._last_now:
            self.fleet.advance((now - self._last_now) / 3600.0)
        self._last_now = now

    # --- the decision: the live loop's translator for the one decision step ------------------------------

    def decide(self, request: PolicyRequest) -> list[Decision]:
        """The pass's jobs and attempts as the step's input; its decisions as they come."""
        now = request.now
        self._tick(now)
        self.offers = request.offers
        rows = merge_offers(request.offers)
        views = [self._view(j, now) for j in request.pending]
        held = [h for job, inst in request.paused if (h := self._held(job, inst, now, True)) is not None]
        held += [h for job, inst in request.running if (h := self._held(job, inst, now, False)) is not None]
        disk = max([v.disk_gb for v in views] + [h.job.disk_gb for h in held] + [20.0])
        inp = StepInput(waiting=views, held=held, offers=OfferTable.from_offers(rows, disk), fleet=self.fleet,
                        now=now, params=self.params, future=self._future(views) if views else None,
                        holdings=request.holdings, budget=request.budget, rebalance=request.rebalance,
                        pinned=frozenset(j.id for j in request.pending if j.pinned_on_demand))
        step = decide_step(inp)
        self.waits = step.of(Wait)
        for w in self.waits:  # every pass while it waits: the loop puts the reason on the job, once
            log.debug("job %s waits: %s", w.job_id, w.reason)
        return step.decisions

    def _view(self, job: Job, now: float) -> JobView:
        return job_view_from_job(job, now, excluded_hosts=self.excluded_hosts,
                                 checkpoint_cost_s=self.params.checkpoint_cost_s)

    def _held(self, job: Job, inst: Instance, now: float, paused: bool) -> Held | None:
        here = paused_offer(inst, job)
        if here is None:
            return None
        view = self._view(job, now)
        tau = self.checkpoint_interval(job)
        return Held(view, OfferTable.from_offers([here], view.disk_gb), "bid" if job.bid is not None else
                    "on_demand", job.bid, paused, tau, job.pinned_on_demand)

    def _future(self, views: Sequence[JobView]) -> FutureOffers | None:
        if not self._held_by:
            return None
        table = OfferTable.from_offers([o for o, _, _ in self._held_by], max(v.disk_gb for v in views))
        return FutureOffers(table, np.array([at for _, at, _ in self._held_by]),
                            [why for _, _, why in self._held_by])

    def _count_outbids(self, snap: Snapshot) -> None:
        """Once per pause of our bid: the lowest running bid rose past it, by at least min_bid / bid - 1."""
        for job in snap.jobs.values():
            if job is None or job.bid is None or job.instance_id is None:
                continue
            inst = next((i for i in snap.instances if i.id == job.instance_id), None)
            if inst is None or inst.id in self._paused or inst.host_id is None or not inst.gpu_name \
                    or (inst.actual_status or "") not in ("stopped", "scheduling"):
                continue
            self._paused.add(inst.id)
            jump = (inst.min_bid or 0.0) / job.bid - 1.0 if job.bid > 0 else 0.0
            self.fleet.observe_outbid(inst.host_id, inst.gpu_name, max(jump, 1e-9))

    # --- learning, after the pass ---------------------------------------------------------------------------

    def learn(self, snap: Snapshot, lost: Sequence[tuple[str, Cause]], now: float) -> None:
        """What the pass saw: the offers listed (hosts seen), our hosts (exposure), our bids paused (outbids)
        and the losses it declared (job id, cause)."""
        self._tick(now)
        for offer in merge_offers(snap.offers):
            self.fleet.see(offer.host_id, offer.gpu_name, offer.reliability or None)
        self._count_outbids(snap)
        by_id: dict[int, Instance] = {}
        where: dict[int, tuple[int, str, float]] = {}
        hours = 0.0 if self._observed_at is None else max(now - self._observed_at, 0.0) / 3600.0
        self._observed_at = now
        for inst in snap.instances:
            if inst.host_id is not None and inst.gpu_name:
                self.fleet.see(inst.host_id, inst.gpu_name, inst.reliability)
                if inst.actual_status == "running":
                    self.fleet.expose(inst.host_id, inst.gpu_name, hours)
                where[inst.id] = (inst.host_id, inst.gpu_name, inst.reliability or 0.9)
            by_id[inst.id] = inst
        self._paused &= {i.id for i in snap.instances if i.actual_status != "running"}
        self._where = where
        for job_id, cause in lost:
            job = snap.jobs.get(job_id)
            gone = by_id.get(job.instance_id) if job is not None and job.instance_id is not None else None
            if gone is not None and gone.host_id is not None and gone.gpu_name and cause.lost_on_host:
                self.fleet.observe_loss(gone.host_id, gone.gpu_name, offline=cause == Cause.host_offline)
        self._refresh_hazards()
        self.job_hazard = {job.id: _as_rented(job, self._hazard[job.instance_id]) for job in snap.jobs.values()
                           if job is not None and job.instance_id is not None and job.instance_id in self._hazard}
        self._held_by = self._held_by_us(snap, by_id)

    def _held_by_us(self, snap: Snapshot, by_id: Mapping[int, Instance]) -> list[tuple[Offer, float, str]]:
        """Machines our running jobs hold, and when each is expected free: only jobs whose heartbeats say
        how much work is left (`progress.remaining_hours`, or `fraction` of `total_hours`)."""
        now = self._last_now or 0.0
        held = []
        for job in snap.jobs.values():
            if job is None or job.state != JobState.RUNNING or job.instance_id is None:
                continue
            inst = by_id.get(job.instance_id)
            prog = job.progress or {}
            share = "fraction" in prog or ("step" in prog and ("of" in prog or "total" in prog))
            known = "remaining_hours" in prog or "total_hours" in prog or (job.spec.work_hours is not None and share)
            if inst is None or not known:  # how long it still holds the offer is a guess: not counted on
                continue
            offer = paused_offer(inst, job)
            if offer is None:
                continue
            view = self._view(job, now)
            hazard = _as_rented(job, self._hazard.get(inst.id, (0.0, 0.0)))
            speed = offer.dlperf / view.reference_dlperf()
            until = held_until(now, view.remaining_work_hours, speed, hazard, self.checkpoint_interval(job),
                               DEFAULT_CHECKPOINT_COST_S, self.params)
            held.append((offer, until, f"held by our job {job.id}"))
        return held

    # --- checkpoint cadence (the agent API's hook: cheap, no I/O) ------------------------------------------

    def _hazards(self, rows: Sequence[tuple[int, str, float]]) -> list[tuple[float, float]]:
        """Per (host, GPU model, reliability): (hazard per hour as a bid, as on demand). A bid's is its loss
        rate plus the outbid rate at a 10% margin; on demand, the offline rate."""
        if not rows:
            return []
        bid, od = rental_hazards(self.fleet, np.array([r[0] for r in rows]), np.array([r[1] for r in rows]),
                                 np.array([r[2] for r in rows]), margin=0.1)
        return list(zip(bid.tolist(), od.tolist(), strict=True))

    def _refresh_hazards(self) -> None:
        """Once per pass, in the loop's thread: the API's hook then only looks the answer up."""
        ids = list(self._where)
        self._hazard = dict(zip(ids, self._hazards([self._where[i] for i in ids]), strict=True))

    def hazard_per_hour(self, job: Job) -> float:
        """Interruptions per hour expected for the job's current attempt, from this pass's estimate for its
        host; before the instance is listed, from its GPU model (computed on the spot: rare)."""
        known = self._hazard.get(job.instance_id or -1)
        if known is None:
            try:
                gpu = gpu_model(job.spec.resources.gpu[0]).name
            except BadInput:
                gpu = job.spec.resources.gpu[0]
            known = self._hazards([(-1, gpu, job.spec.resources.min_reliability or 0.9)])[0]
        return _as_rented(job, known)

    def checkpoint_interval(self, job: Job, checkpoint_cost_s: float | None = None) -> float:
        """Young/Daly seconds between checkpoints for `interval: auto` (a numeric interval is kept)."""
        interval = job.spec.checkpoint.interval
        if isinstance(interval, (int, float)):
            return float(interval)
        cost = checkpoint_cost_s if checkpoint_cost_s is not None else self.params.checkpoint_cost_s
        return checkpoint_interval(cost, self.hazard_per_hour(job))


def _as_rented(job: Job, hazards: tuple[float, float]) -> float:
    """Of (as a bid, on demand), the hazard of the way the job's attempt is rented."""
    return hazards[0] if job.bid is not None else hazards[1]

