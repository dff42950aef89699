"""The reconcile loop: one leader at a time, each pass level-triggered and idempotent.

A pass: hold the leader lease (a Redis lease with a fencing token) -> read both sides afresh (the jobs
from the JobStore; ONE marketplace listing; the agents' heartbeats; the durable destroy obligations; offers
only when a job is pending) -> `decide(snapshot, now)` -> the applier executes the plan, checking the
fencing token before it acts. A failed listing is an observation error: the pass stops there and decides
nothing (never "all gone"). A pass that raises is logged and the next one starts from scratch: nothing
lives in memory between passes, so a scheduler killed at any point resumes by simply running again.

Never changes a job's state but through the applier; never talks to RQ directly.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from vastfleet.errors import NotFound, VastfleetError
from vastfleet.logs import event
from vastfleet.market.protocol import Marketplace
from vastfleet.queue import JobQuarantined, JobStore, Lease
from vastfleet.queue.heartbeats import last_heartbeat, request_checkpoint
from vastfleet.scheduler import actions as act
from vastfleet.scheduler.apply import Applied, Applier
from vastfleet.scheduler.exclusions import FleetMemory, HostExclusions, JobHazards
from vastfleet.scheduler.labels import parse_label
from vastfleet.scheduler.plan import Create, Plan, PlanParams, Snapshot, decide
from vastfleet.scheduler.plan_types import Placer
from vastfleet.scheduler.policy_adapter import PolicyPlacer
from vastfleet.scheduler.reasons import PendingReasons, TeardownWaits
from vastfleet.scheduler.salvage import SalvageRecord, Salvages
from vastfleet.scheduler.supervise import Beat, PendingCheckpoint
from vastfleet.spec.job import ATTEMPT_STATES, Job, JobState
from vastfleet.spec.jobspec import Interruptible
from vastfleet.spec.market import BidKind, Offer, OfferQuery

log = logging.getLogger(__name__)

LIVE_STATES = (JobState.PENDING, JobState.PLACING, JobState.BOOTING, JobState.RUNNING, JobState.PAUSED,
               JobState.INTERRUPTED)


@dataclass
class PassResult:
    leader: bool
    observed: bool = False  # the listing succeeded
    plan: Plan | None = None
    applied: Applied | None = None
    error: str | None = None
    market_calls: int = 0


@dataclass
class LoopConfig:
    interval_s: float = 5.0  # between passes; production default (tests: 0.5)
    lease_ttl_s: float = 30.0  # a dead leader is replaced after this long
    params: PlanParams = field(default_factory=PlanParams)
    offer_limit: int = 50  # offers per search beyond what the fleet itself holds and the jobs asking need
    max_offer_limit: int = 5000
    balance_every_s: float = 60.0  # the account's credit is read at most this often (one marketplace call)
    max_backoff_s: float = 60.0  # a job no offer fits is searched for at most this rarely


def queries_for(job: Job, limit: int = 50) -> list[OfferQuery]:
    """The offer searches a pending job needs: bid and/or on-demand, by its interruptible setting."""
    res = job.spec.resources
    kinds = {Interruptible.never: [BidKind.on_demand], Interruptible.always: [BidKind.bid]}.get(
        job.spec.interruptible, [BidKind.bid, BidKind.on_demand])
    return [OfferQuery(gpu_names=list(res.gpu), num_gpus=res.gpus, min_gpu_ram_gb=res.min_gpu_ram_gb,
                       min_cuda=res.min_cuda, min_disk_gb=res.disk_gb, min_reliability=res.min_reliability,
                       min_direct_ports=res.direct_ports or None, min_inet_down_mbps=res.min_inet_down_mbps,
                       max_dph=res.max_price_per_hour, verified=res.verified or None,
                       geolocations=res.regions, kind=kind, limit=limit, disk_gb=res.disk_gb)
            for kind in kinds]


def beat_from(at: float, data: dict[str, Any], job: Job) -> Beat:
    """The agent's heartbeat record as supervision reads it. `pending_uploads` (checkpoint directories written
    but not yet committed) is read when the agent sends it; absent, it is unknown (None), never guessed."""
    pending = data.get("pending_uploads")
    inst = data.get("instance_id")
    newest = data.get("pending")
    try:
        told = PendingCheckpoint(**newest) if isinstance(newest, dict) else None
    except TypeError:  # an older agent's shape: no salvage for it
        told = None
    return Beat(at=float(data.get("at", at)), epoch=int(data.get("epoch", -1)),
                instance_id=int(inst) if isinstance(inst, int) else None,
                pending_uploads=int(pending) if isinstance(pending, int) else None, pending=told)


class CountingMarket:
    """Counts the calls of one pass (the 'settled world makes no calls' check, and metrics)."""

    def __init__(self, inner: Marketplace) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attr(*args, **kwargs)

        return call


class SchedulerLoop:
    def __init__(self, store: JobStore, market: Marketplace, redis_client: redis.Redis, ctx: act.ActionContext,
                 *, config: LoopConfig | None = None, inline: bool = False, context_key: str = "default",
                 owner: str | None = None, clock: Callable[[], float] = time.time, placer: Placer | None = None,
                 metrics: Any = None, requeue_s: float = 60.0,
                 exclusions: HostExclusions | None = None, job_hazards: JobHazards | None = None,
                 memory: FleetMemory | None = None) -> None:
        self.store = store
        self.market = market
        self.redis = redis_client
        self.ctx = ctx
        self.config = config or LoopConfig()
        self.clock = clock
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease = Lease(redis_client, "scheduler", self.config.lease_ttl_s, clock=clock, prefix=ctx.prefix)
        self.token: int | None = None
        self.placer: Placer = placer if placer is not None else PolicyPlacer()
        self._rebalanced_at = float("-inf")  # running attempts were last offered to a move
        self.metrics = metrics
        # hosts that failed us, left out of placement for a while (Redis: survives a restart)
        self.exclusions = exclusions or HostExclusions(redis_client, ctx.prefix, clock=clock)
        self.job_hazards = job_hazards  # published each pass for agent APIs in other processes
        self.memory = memory  # the placer's fleet estimates across restarts and changes of leader
        self.excluded: frozenset[int] = frozenset()
        self._feed: Any = None  # vastfleet.metrics.feed.PassFeed of `metrics`, made at the first pass
        self.applier = Applier(ctx, inline=inline, context_key=context_key, fence=self._fenced,
                               queue_ttl_s=requeue_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0
        self.last: PassResult | None = None
        # Per-job backoff of offer searches for jobs no offer fits (memory only: an optimisation, not state).
        self._backoff: dict[str, tuple[float, float]] = {}  # job id -> (next search at, current delay)
        self._balance: float | None = None  # the account's credit as last read
        self._asked_checkpoint: set[str] = set()  # jobs asked to checkpoint now while the credit runs low
        self._balance_at = float("-inf")
        self.reasons = PendingReasons(store, ctx.prefix)  # why a pending job has no offer, on its record
        self.waits = TeardownWaits(ctx.prefix, store)  # instances teardown keeps, logged once each
        self._stale_salvages: list[str] = []  # read by observe, dropped only by a pass that still leads
        self._one_pass = threading.Lock()

    # --- leadership -----------------------------------------------------------------------------------

    def _lead(self) -> bool:
        if self.token is not None and self.lease.renew(self.owner, self.token):
            return True
        self.token = self.lease.acquire(self.owner)
        if self.token is not None:
            log.info("scheduler %s leads with fencing token %s", self.owner, self.token)
            self._recall()
        return self.token is not None

    def _recall(self) -> None:
        """Taking the lead: start from what the last leader learned, not from the priors."""
        if self.memory is None or self.placer.memory() is None:
            return
        try:
            stats = self.memory.load()
        except redis.RedisError as exc:
            log.warning("fleet stats unavailable (%s): starting from the priors", exc)
            return
        if stats is not None:
            self.placer.recall(stats)
            log.info("fleet stats restored: %d hosts, %d GPU models", len(stats.hosts), len(stats.gpus))

    def _remember(self, force: bool = False) -> None:
        stats = self.placer.memory()
        if self.memory is not None and stats is not None:
            self.memory.save(stats, force=force)

    def _fenced(self) -> bool:
        return self.token is not None and self.lease.is_current(self.token)

    # --- one pass -------------------------------------------------------------------------------------

    def run_pass(self) -> PassResult:
        with self._one_pass:  # the loop's thread and a caller (a test, `vastfleet` tooling) never interleave
            return self._run_pass()

    def _run_pass(self) -> PassResult:
        if not self._lead():
            return PassResult(leader=False)
        market = CountingMarket(self.market)
        result = PassResult(leader=True)
        started = time.monotonic()
        snap: Snapshot | None = None
        try:
            rebalance = self.clock() - self._rebalanced_at >= self.config.params.rebalance_every_s
            snap = self.observe(market, rebalance)
            if snap is None:
                result.error = "marketplace listing failed: observation error, nothing decided"
                return result
            result.observed = True
            if not self._fenced():
                # a slow observation outlived the lease: another scheduler leads now, and only the leader
                # writes (salvage records, the spend books, transitions)
                result.error = "lost the lead while observing: nothing written"
                log.warning("scheduler %s %s", self.owner, result.error)
                return result
            self._forget_salvages()
            now = self.clock()
            snap = self._account(market, snap, now)
            self._exclude(snap, now)
            result.plan = decide(snap, now, self.config.params, self.placer, rebalance)
            if rebalance:
                self._rebalanced_at = now
            self._note_unplaced(snap, result.plan, now)
            self.waits.log(snap, result.plan)
            self.applier.ctx = act.ActionContext(**{**self.ctx.__dict__, "market": market})
            result.applied = self.applier.apply(result.plan)
            self._note_failed_hosts(snap, result.applied, now)
            self.reasons.explain(market, snap, result.plan, now, self.placer.waits, self.excluded)
            self.placer.learn(snap, [(t.job_id, t.cause) for t in result.applied.transitioned
                                     if t.to == JobState.INTERRUPTED and t.cause is not None], now)
            hazards = getattr(self.placer, "job_hazard", None)
            if self.job_hazards is not None and hazards is not None:
                self.job_hazards.publish(hazards)
            self._remember()
        except (VastfleetError, redis.RedisError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            log.warning("reconcile pass failed: %s", result.error)
        finally:
            result.market_calls = len(market.calls)
            self.passes += 1
            self.last = result
            self._observe_metrics(result, snap, time.monotonic() - started)
        return result

    def observe(self, market: Marketplace, rebalance: bool = False) -> Snapshot | None:
        """One observation of both sides. `rebalance`: running attempts may be moved this pass, so their
        offers are searched too."""
        # Jobs first, then the listing, then offers: a rental made meanwhile is then either listed, or its job
        # was read PLACING (its machine is held back this pass), or the offers price it in. Never a GPU of
        # ours that looks free.
        jobs: dict[str, Job] = {}
        for state in LIVE_STATES:
            for job in self.store.list(state, limit=100_000):
                jobs[job.id] = job
        try:
            instances = market.list_instances()
        except (VastfleetError, OSError) as exc:
            log.warning("listing instances failed (%s): not taken as 'all gone'", exc)
            return None
        quarantined: dict[str, float] = {}
        for inst in instances:
            parsed = parse_label(inst.label, self.ctx.prefix)
            if parsed is not None and parsed[0] not in jobs and parsed[0] not in quarantined:
                try:
                    jobs[parsed[0]] = self.store.get(parsed[0])
                except JobQuarantined:  # unreadable: its instance is kept a while, not taken for an orphan
                    quarantined[parsed[0]] = self._quarantined_at(parsed[0])
                except NotFound:
                    pass  # the label names a job we do not know: supervise calls it an orphan
        beats: dict[str, Beat] = {}
        for job in jobs.values():
            if job.state in ATTEMPT_STATES or job.state.terminal:
                hb = last_heartbeat(self.redis, job.id, prefix=self.ctx.prefix)
                if hb is not None:
                    beats[job.id] = beat_from(hb[0], hb[1], job)
        creating = frozenset(
            (j.id, j.epoch) for j in jobs.values() if j.state == JobState.PLACING and (
                self.redis.exists(self.ctx.create_lock_key(j.id, j.epoch))
                or self.redis.exists(self.ctx.create_queued_key(j.id, j.epoch))))
        obligations = act.obligations(self.ctx)
        destroying = frozenset(i for i in obligations if self.redis.exists(self.ctx.destroy_queued_key(i)))
        now = self.clock()
        pending = [j for j in jobs.values() if j.state == JobState.PENDING
                   and self._backoff.get(j.id, (0.0, 0.0))[0] <= now]
        by_id = {i.id: i for i in instances}
        paused = [j for j in jobs.values() if j.state in (JobState.RUNNING, JobState.PAUSED)
                  and j.instance_id in by_id
                  and by_id[j.instance_id].is_bid
                  and (by_id[j.instance_id].actual_status or "") in ("stopped", "scheduling")]
        wanted = pending + paused  # a paused bid is weighed against moving: it needs offers too
        if rebalance:  # a running attempt is weighed against a cheaper offer, or bids again after a storm
            stopped = {j.id for j in paused}
            wanted += [j for j in jobs.values() if j.state == JobState.RUNNING and j.id not in stopped]
        ours = sum(1 for i in instances if parse_label(i.label, self.ctx.prefix) is not None)
        offers = self._offers(market, wanted, ours) if wanted else {}
        salvages = self._salvages(jobs) if self.config.params.salvage else {}
        return Snapshot(jobs=jobs, instances=instances, beats=beats, offers=offers, creating=creating,
                        obligations=obligations, destroying=destroying, quarantined=quarantined,
                        salvages=salvages)

    def _salvages(self, jobs: dict[str, Job]) -> dict[str, SalvageRecord]:
        """The salvages of attempts still interrupted (the others are dropped once the pass knows it leads)."""
        records = Salvages(self.redis, self.ctx.prefix).all()
        live = {j: r for j, r in records.items() if j in jobs and jobs[j].epoch == r.epoch
                and jobs[j].state == JobState.INTERRUPTED}
        self._stale_salvages = [j for j in records if j not in live]
        return live

    def _forget_salvages(self) -> None:
        stale, self._stale_salvages = self._stale_salvages, []
        if stale:
            Salvages(self.redis, self.ctx.prefix).forget(stale)

    def _quarantined_at(self, job_id: str) -> float:
        try:
            return self.store.quarantine.entry(job_id).quarantined_at
        except NotFound:  # released meanwhile: the next pass reads it again
            return self.clock()

    def _account(self, market: Marketplace, snap: Snapshot, now: float) -> Snapshot:
        """The pass's money: accrue our rentals' spend from this listing (the leader's books), and read the
        account's credit at most every `balance_every_s` (one call; a failed read leaves the last one)."""
        burn = self.ctx.spend.accrue(snap.instances, now) if self.ctx.spend is not None else None
        if now - self._balance_at >= self.config.balance_every_s:
            self._balance_at = now
            try:
                self._balance = market.balance()
            except (VastfleetError, OSError) as exc:
                log.warning("reading the account's credit failed: %s", exc)
        if self.metrics is not None and self._balance is not None:
            gauge = getattr(self.metrics, "set_balance", None)
            if gauge is not None:
                gauge(self._balance)
        self._credit_at_risk(snap, burn)
        return replace(snap, burn=burn, balance=self._balance)

    def _credit_at_risk(self, snap: Snapshot, burn: Any) -> None:
        """Credit for less than an hour of the fleet: below zero vast deletes every disk, so each running job is
        asked (once) to checkpoint now, and its work is off the box before the money runs out."""
        hour = burn.per_hour if burn is not None else 0.0
        if self._balance is None or self._balance >= self.config.params.credit_reserve_usd + hour:
            self._asked_checkpoint.clear()
            return
        for job in snap.jobs.values():
            if job is not None and job.state == JobState.RUNNING and job.id not in self._asked_checkpoint:
                request_checkpoint(self.redis, job.id, job.epoch, prefix=self.ctx.prefix)
                self._asked_checkpoint.add(job.id)
                event(log, "checkpoint asked", f"the account's credit ${self._balance:.2f} covers less than an hour"
                      " of the fleet", job=job.id, epoch=job.epoch)

    def _exclude(self, snap: Snapshot, now: float) -> None:
        """The live exclusions into the placer's job views."""
        self.excluded = self.exclusions.live(now)
        self.placer.exclude_hosts(self.excluded)

    def _note_failed_hosts(self, snap: Snapshot, applied: Applied, now: float) -> None:
        """A loss the host is to blame for (not outbid/paused: that is the market) excludes it for a while."""
        by_id = {i.id: i for i in snap.instances}
        hosts = []
        for t in applied.transitioned:
            job = snap.jobs.get(t.job_id)
            if t.cause is None or not t.cause.blames_host or job is None or job.instance_id is None:
                continue
            inst = by_id.get(job.instance_id)
            if inst is not None and inst.host_id is not None:
                event(log, "host excluded", t.reason, job=t.job_id, epoch=job.epoch, instance=inst.id,
                      host=inst.host_id, seconds=round(self.exclusions.period_s))
                hosts.append(inst.host_id)
        self.exclusions.exclude(hosts, now)

    def _note_unplaced(self, snap: Snapshot, plan: Plan, now: float) -> None:
        placed = {c.job_id for c in plan.of(Create)}
        for job_id, found in snap.offers.items():
            # Back off only a job whose search found nothing: one that lost this pass to others (or to the
            # fleet's own holdings) is tried again next pass, as capacity frees (searches are shared anyway).
            if job_id in placed or found:
                self._backoff.pop(job_id, None)
            else:
                delay = min(self.config.max_backoff_s, max(self.config.interval_s, 2 * self._backoff.get(
                    job_id, (0.0, 0.0))[1]))
                self._backoff[job_id] = (now + delay, delay)
        for job_id in list(self._backoff):
            job = snap.jobs.get(job_id)
            if job is None or job.state != JobState.PENDING:
                del self._backoff[job_id]

    def _offers(self, market: Marketplace, pending: Sequence[Job], ours: int) -> dict[str, list[Offer]]:
        """One search per distinct query, shared by the jobs that ask it. The cheapest offers are often the
        GPUs our own rentals hold (listed just above our bids): each search reaches past them, and past one
        offer per job asking, within `max_offer_limit`."""
        asking: dict[str, int] = {}
        for job in pending:
            for query in queries_for(job, 0):
                key = query.model_dump_json()
                asking[key] = asking.get(key, 0) + 1
        cache: dict[str, list[Offer]] = {}
        combined: dict[tuple[str, ...], list[Offer]] = {}  # jobs asking the same searches share one list
        out: dict[str, list[Offer]] = {}
        for job in pending:
            queries = queries_for(job, 0)
            keys = tuple(q.model_dump_json() for q in queries)
            if keys not in combined:
                for key, query in zip(keys, queries, strict=True):
                    if key in cache:
                        continue
                    limit = min(self.config.max_offer_limit, self.config.offer_limit + ours + 2 * asking[key])
                    try:
                        cache[key] = market.search_offers(query.model_copy(update={"limit": limit}))
                    except VastfleetError as exc:
                        log.warning("offer search failed: %s", exc)
                        cache[key] = []
                combined[keys] = [o for key in keys for o in cache[key]]
            out[job.id] = combined[keys]
        return out

    def _observe_metrics(self, result: PassResult, snap: Snapshot | None, seconds: float) -> None:
        """Feed the exporter; never lets a metrics failure touch the pass."""
        if self.metrics is None:
            return
        try:
            self.metrics.observe_pass(seconds)
            if snap is not None:
                ours = [i for i in snap.instances if parse_label(i.label, self.ctx.prefix) is not None]
                now = self.clock()
                ages = [now - b.at for jid, b in snap.beats.items()
                        if jid in snap.jobs and snap.jobs[jid].state == JobState.RUNNING]
                self.metrics.fleet_snapshot(ours, ages)
                excluded = getattr(self.metrics, "set_hosts_excluded", None)
                if excluded is not None:
                    excluded(len(self.excluded))
                if self._feed is None or self._feed.metrics is not self.metrics:
                    from vastfleet.metrics.feed import PassFeed  # spend, jobs, interruptions; never a write

                    self._feed = PassFeed(self.metrics, self.store, self.ctx.prefix, self.clock)
                self._feed.after_pass(snap, result.plan, result.applied, now)
        except Exception:
            log.warning("metrics hook failed", exc_info=True)

    # --- running --------------------------------------------------------------------------------------

    def run_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_pass()
            except Exception:
                log.exception("reconcile pass crashed")
            self._stop.wait(self.config.interval_s)
        if self.token is not None:
            self.lease.release(self.owner, self.token)

    def start(self) -> SchedulerLoop:
        self._thread = threading.Thread(target=self.run_forever, name="vastfleet-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.memory is None:
            return
        try:
            if self._fenced():  # only the leader's view is worth keeping
                self._remember(force=True)  # the last minute of learning too
        except redis.RedisError as exc:
            log.warning("fleet stats not saved at stop: %s", exc)
