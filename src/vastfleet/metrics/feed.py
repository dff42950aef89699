"""Feeding the exporter from the real control plane: what one reconcile pass saw and did (`PassFeed`), and
the agent API's checkpoint commits (`CommitFeed`).

The scheduler calls `PassFeed.after_pass` once per observed pass; it turns the snapshot and the applied
transitions into the job, money and interruption metrics:
    spend             each running instance of ours bills dph_total x elapsed hours as compute; a stopped one
                      bills its disk as storage (the offer's storage $/GB-month x disk, when the offer was
                      seen at create; else dph_total - bid for a bid). The on-demand equivalent of a bid is
                      the same machine's on-demand offer (seen at create, when the job searched on-demand
                      too) x the same hours; unknown (interruptible: always): the same figure.
    job_started       a job first seen RUNNING in an attempt whose claim happened after this feed started:
                      wait = RUNNING - the time it (re-)entered PENDING; recovery = RUNNING - the interruption
                      before it (read from the job's event stream, once per attempt).
    job_finished      a job seen live before and terminal now (in the snapshot, by an applied transition, or
                      read back when it left the live listing); cost = what this feed accrued for it, or the
                      job's own cost_usd when larger.
    preemption/work_lost  an applied transition to INTERRUPTED: GPU model of the RENTED instance; lost work =
                      GPU-seconds from the later of (the attempt's RUNNING, its last committed checkpoint) to the
                      last heartbeat.
    set_budget        the live jobs' budget_usd sum and their accrued spend; the hourly cap is the sum of the
                      live jobs' max_price_per_hour (each job's own $/h cap; the fleet cannot exceed their sum).
State lives in memory only: a restarted scheduler restarts the accrual (nothing is counted twice; a few
seconds of spend may go uncounted). Never changes a job, never calls the marketplace; every failure is
swallowed by the caller, so metrics can never touch a pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from vastfleet.errors import NotFound
from vastfleet.scheduler.labels import parse_label
from vastfleet.spec.job import CheckpointRef, Job, JobEvent, JobState
from vastfleet.storage.upload_timer import UploadTimer

log = logging.getLogger(__name__)

HOURS_PER_MONTH = 730.0
LIVE = (JobState.PENDING, JobState.PLACING, JobState.BOOTING, JobState.RUNNING, JobState.PAUSED,
        JobState.INTERRUPTED)
# supervision causes -> the exporter's preemption kinds
METRIC_KIND = {"outbid": "outbid", "paused": "outbid", "stuck_scheduling": "stuck", "boot_timeout": "stuck",
               "host_offline": "host_offline", "heartbeat_lost": "heartbeat_lost", "exited": "exited"}


class PassFeed:
    def __init__(self, metrics: Any, store: Any, prefix: str, clock: Callable[[], float] = time.time) -> None:
        self.metrics = metrics
        self.store = store
        self.prefix = prefix
        self.clock = clock
        self.started_at = clock()
        self._accrued_at: dict[int, float] = {}  # instance id -> time billed up to
        self._offer: dict[tuple[str, int], tuple[float | None, float]] = {}  # (job, epoch) -> (on-demand $/h, $/GB-mo)
        self._cost: dict[str, float] = {}  # job id -> dollars accrued
        self._running: dict[str, tuple[int, float]] = {}  # job id -> (epoch, RUNNING at) reported
        self._live: set[str] = set()

    # --- the pass ---------------------------------------------------------------------------------------

    def after_pass(self, snap: Any, plan: Any, applied: Any, now: float) -> None:
        if plan is not None:
            self._note_creates(snap, plan)
        self._spend(snap, now)
        by_id = {i.id: i for i in snap.instances}
        for job in snap.jobs.values():
            if job.state == JobState.RUNNING:
                self._maybe_started(job)
        done: set[str] = set()
        for t in applied.transitioned if applied is not None else ():
            job = snap.jobs.get(t.job_id)
            if t.to == JobState.INTERRUPTED and job is not None:
                self._interrupted(job, t.reason, by_id.get(job.instance_id), snap.beats.get(t.job_id), now)
            if t.to.terminal and t.job_id in self._live:
                self._finished(t.job_id, t.to, job)
                done.add(t.job_id)
        for job in snap.jobs.values():
            if job.state.terminal and job.id in self._live and job.id not in done:
                self._finished(job.id, job.state, job)
        for job_id in self._live - set(snap.jobs):
            try:
                gone = self.store.get(job_id)
            except NotFound:
                self._live.discard(job_id)
                continue
            if gone.state.terminal:
                self._finished(job_id, gone.state, gone)
        self._live |= {j.id for j in snap.jobs.values() if j.state in LIVE and j.id not in done}
        self._budget(snap)

    def _note_creates(self, snap: Any, plan: Any) -> None:
        from vastfleet.scheduler.plan import Create

        for create in plan.of(Create):
            offers = snap.offers.get(create.job_id, ())
            chosen = next((o for o in offers if o.id == create.offer_id), None)
            if chosen is None:
                continue
            # A bid search prices offers at the bid: the on-demand price is that of the same machine's
            # on-demand offer, when the job searched on-demand too (interruptible: auto).
            on_demand = chosen.dph_total if not chosen.is_bid else next(
                (o.dph_total for o in offers if not o.is_bid and o.machine_id == chosen.machine_id
                 and o.num_gpus == chosen.num_gpus), None)
            self._offer[(create.job_id, create.epoch)] = (on_demand, chosen.storage_cost)

    def _spend(self, snap: Any, now: float) -> None:
        seen: set[int] = set()
        for inst in snap.instances:
            parsed = parse_label(inst.label, self.prefix)
            if parsed is None:
                continue
            seen.add(inst.id)
            since = self._accrued_at.get(inst.id, now)
            self._accrued_at[inst.id] = now
            hours = max(0.0, now - since) / 3600.0
            if hours == 0.0:
                continue
            status = (inst.actual_status or "").lower()
            offer = self._offer.get((parsed[0], parsed[1]))
            if status == "running":
                dollars = float(inst.dph_total or 0.0) * hours
                on_demand = offer[0] * hours if offer is not None and offer[0] and inst.is_bid else dollars
                self.metrics.spend(dollars, "compute", inst.gpu_name, inst.is_bid, on_demand_dollars=on_demand)
            elif status == "stopped":
                rate = _storage_rate(inst, offer[1] if offer is not None else None)
                dollars = rate * hours
                if dollars > 0:
                    self.metrics.spend(dollars, "storage", inst.gpu_name, inst.is_bid)
            else:
                continue
            self._cost[parsed[0]] = self._cost.get(parsed[0], 0.0) + dollars
        for gone in set(self._accrued_at) - seen:
            del self._accrued_at[gone]

    # --- job facts --------------------------------------------------------------------------------------

    def _maybe_started(self, job: Job) -> None:
        if self._running.get(job.id, (-1, 0.0))[0] == job.epoch:
            return
        events = self.store.events(job.id, limit=10_000)
        run_at = _last_at(events, lambda e: _to(e, JobState.RUNNING) and e.epoch == job.epoch)
        if run_at is None:
            return
        self._running[job.id] = (job.epoch, run_at)
        if run_at < self.started_at:
            return  # claimed before this scheduler started: another process reported it (or nobody could)
        before = [e for e in events if e.at <= run_at]
        pending_at = _last_at(before, lambda e: e.kind == "submitted" or _to(e, JobState.PENDING))
        if pending_at is not None:
            self.metrics.job_started(run_at - pending_at)
        prev_run = _last_at(before, lambda e: _to(e, JobState.RUNNING) and e.epoch < job.epoch)
        lost_at = _last_at(before, lambda e: _to(e, JobState.INTERRUPTED))
        if lost_at is not None and (prev_run is None or lost_at >= prev_run):
            self.metrics.recovery(run_at - lost_at)

    def _interrupted(self, job: Job, reason: str, inst: Any, beat: Any, now: float) -> None:
        gpu = inst.gpu_name if inst is not None else None
        self.metrics.preemption(gpu, METRIC_KIND.get(reason.split(":", 1)[0], "unknown"))
        if job.state != JobState.RUNNING:
            return  # lost while booting: no work had started
        epoch, run_at = self._running.get(job.id, (-1, 0.0))
        if epoch != job.epoch:
            return  # never seen running in this process: where the work began is unknown
        start = run_at
        ref: CheckpointRef | None = job.latest_checkpoint
        if ref is not None and ref.epoch == job.epoch:
            start = max(start, ref.committed_at)
        until = beat.at if beat is not None and beat.epoch == job.epoch else now
        gpus = int(inst.num_gpus or 0) if inst is not None else 0
        self.metrics.work_lost(max(0.0, until - start) * (gpus or job.spec.resources.gpus), gpu)

    def _finished(self, job_id: str, state: JobState, job: Job | None) -> None:
        self._live.discard(job_id)
        self._running.pop(job_id, None)
        cost = self._cost.pop(job_id, 0.0)
        if job is not None:
            cost = max(cost, job.cost_usd)
            self._offer = {k: v for k, v in self._offer.items() if k[0] != job_id}
        self.metrics.job_finished(state.value, cost)

    def _budget(self, snap: Any) -> None:
        live = [j for j in snap.jobs.values() if j.state in LIVE]
        budgeted = [j for j in live if j.spec.budget_usd]
        total = sum(float(j.spec.budget_usd or 0.0) for j in budgeted)
        spent = sum(max(self._cost.get(j.id, 0.0), j.cost_usd) for j in budgeted)
        hourly = sum(float(j.spec.resources.max_price_per_hour or 0.0) for j in live)
        self.metrics.set_budget(total or None, hourly or None, spent)


def _to(event: JobEvent, state: JobState) -> bool:
    return event.kind == "transition" and event.to_state == state


def _last_at(events: list[JobEvent], match: Callable[[JobEvent], bool]) -> float | None:
    for event in reversed(events):
        if match(event):
            return event.at
    return None


def _storage_rate(inst: Any, storage_cost: float | None) -> float:
    """$/h of a stopped instance's disk."""
    if storage_cost and inst.disk_space:
        return float(storage_cost) * float(inst.disk_space) / HOURS_PER_MONTH
    if inst.is_bid and inst.bid_price is not None:
        return max(0.0, float(inst.dph_total or 0.0) - float(inst.bid_price))  # vast: dph_total = bid + disk
    return 0.0


class CommitFeed:
    """Checkpoint uploads as the agent API sees them: `on_commit` is an `AgentHooks.on_commit`. The upload's
    duration runs from the first presigned PUT URL handed out for the checkpoint's prefix to its commit;
    `watch(ckpt)` wraps the store's `presign_put` on that instance (its class is kept, so the API's
    isinstance checks still hold)."""

    def __init__(self, metrics: Any, clock: Callable[[], float] = time.time) -> None:
        self.metrics = metrics
        self.timer = UploadTimer(clock)

    def watch(self, ckpt: Any) -> Any:
        return self.timer.watch(ckpt)

    def on_commit(self, job: Job, ref: CheckpointRef) -> None:
        started = self.timer.started(ref.prefix)
        started = ref.committed_at if started is None else started
        self.metrics.checkpoint_upload(int(ref.bytes), max(0.0, ref.committed_at - started))
