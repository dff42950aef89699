"""The sweep driver's own loop: one leader (the Redis lease `sweeps`, fenced like the scheduler's), a pass
every few seconds over the sweeps that have work left.

A pass: hold the lease -> ONE marketplace listing (the sweeps' instances: spend, actual instances) -> per
sweep, offers searched for its trial job (cached a little: many sweeps with the same resources share one
search) -> `SweepDriver.drive`. A failed listing skips the pass (never "no instances"). Its own loop and
lease rather than a step in the scheduler's pass: the scheduler stays as it is, and a slow Optuna sampler
never delays a placement or a recovery.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from vastfleet.errors import BadInput, VastfleetError
from vastfleet.market.protocol import Marketplace
from vastfleet.queue import JobStore, Lease
from vastfleet.scheduler.exclusions import FleetMemory
from vastfleet.scheduler.labels import parse_label
from vastfleet.scheduler.loop import queries_for
from vastfleet.scheduler.policy import FleetStats, OfferTable, PolicyParams, job_view_from_job
from vastfleet.scheduler.policy.autoscale import MarketView, market_view
from vastfleet.scheduler.policy_adapter import merge_offers
from vastfleet.spec.gpus import gpu_model
from vastfleet.spec.job import Job
from vastfleet.spec.market import Offer
from vastfleet.sweeps.driver import DriverParams, Observed, SweepDriver
from vastfleet.sweeps.models import Sweep
from vastfleet.sweeps.store import SweepStore

log = logging.getLogger(__name__)


def probe_job(sweep: Sweep, now: float) -> Job:
    """The trial job as the scheduler will see it (never stored): what its offers and costs are for."""
    spec = sweep.spec.job
    return Job(id="j-sweepprobe", spec=spec, submitted_at=now, updated_at=now, deadline_at=spec.deadline_at(now))


def market_for(sweep: Sweep, offers: list[Offer], fleet: FleetStats, now: float, work_h: float,
               params: PolicyParams | None = None) -> MarketView:
    """The autoscaler's market for one sweep's trials: the cost model over these offers."""
    job = job_view_from_job(probe_job(sweep, now), now)
    table = OfferTable.from_offers(offers, job.disk_gb)
    return market_view(job, table, fleet, now, params or PolicyParams(), work_h)


def speed_of(sweep: Sweep, inst: Any, now: float) -> float:
    """The instance's speed against the trial's reference GPU (1 when its model is unknown)."""
    try:
        ref = job_view_from_job(probe_job(sweep, now), now).reference_dlperf()
        return gpu_model(inst.gpu_name or "").dlperf * max(int(inst.num_gpus or 1), 1) / max(ref, 1e-9)
    except BadInput:
        return 1.0


class SweepLoop:
    def __init__(self, jobs: JobStore, market: Marketplace, client: redis.Redis, *, prefix: str = "vf",
                 interval_s: float = 5.0, lease_ttl_s: float = 30.0, offers_ttl_s: float = 15.0,
                 params: DriverParams | None = None, clock: Callable[[], float] = time.time,
                 owner: str | None = None, policy: PolicyParams | None = None) -> None:
        self.jobs = jobs
        self.market = market
        self.redis = client
        self.prefix = prefix
        self.interval_s = interval_s
        self.offers_ttl_s = offers_ttl_s
        self.clock = clock
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease = Lease(client, "sweeps", lease_ttl_s, clock=clock, prefix=prefix)
        self.token: int | None = None
        self.sweeps = SweepStore(client, prefix, clock)
        self.fixed_reserve = params is not None
        self.driver = SweepDriver(jobs, self.sweeps, self._fenced, params or DriverParams(reserve_s=self._reserve(0.0)))
        self.memory = FleetMemory(client, prefix)
        self.policy = policy or PolicyParams()  # the cost model's parameters, as the scheduler's placer has them
        self._fleet: tuple[float, FleetStats] | None = None
        self._offers: dict[str, tuple[float, list[Offer]]] = {}
        self._previous: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0

    def _reserve(self, gap_s: float) -> float:
        """What a stop takes to end billing: about a driver pass, a scheduler pass and the destroy. The passes
        are as long as they turn out to be (a loaded control plane is slower), never shorter than configured."""
        return 3.0 * max(self.interval_s, gap_s) + 2.0

    def _lead(self) -> bool:
        if self.token is not None and self.lease.renew(self.owner, self.token):
            return True
        self.token = self.lease.acquire(self.owner)
        if self.token is not None:
            log.info("sweep driver %s leads with fencing token %s", self.owner, self.token)
        return self.token is not None

    def _fenced(self) -> bool:
        return self.token is not None and self.lease.is_current(self.token)

    # --- what the pass sees -----------------------------------------------------------------------------

    def _fleet_stats(self, now: float) -> FleetStats:
        """The scheduler's learned hazards (saved by its leader), re-read once a minute."""
        if self._fleet is None or now - self._fleet[0] > 60.0:
            try:
                stats = self.memory.load()
            except redis.RedisError:
                stats = None
            self._fleet = (now, stats or FleetStats(watch_all=False))
        return self._fleet[1]

    def _search(self, sweep: Sweep, now: float) -> list[Offer]:
        job = probe_job(sweep, now)
        limit = max(50, 2 * sweep.spec.max_parallel)
        key = "|".join(q.model_dump_json() for q in queries_for(job, limit))
        cached = self._offers.get(key)
        if cached is not None and now - cached[0] < self.offers_ttl_s:
            return cached[1]
        found = {q.kind.value: self.market.search_offers(q) for q in queries_for(job, limit)}
        offers = merge_offers(found)
        self._offers[key] = (now, offers)
        return offers

    def observe(self, now: float) -> Observed | None:
        try:
            instances = self.market.list_instances()
        except (VastfleetError, OSError) as exc:
            log.warning("sweeps: listing instances failed (%s): pass skipped", exc)
            return None
        by_job: dict[str, list[Any]] = {}
        for inst in instances:
            parsed = parse_label(inst.label, self.prefix)
            if parsed is not None:
                by_job.setdefault(parsed[0], []).append(inst)
        fleet = self._fleet_stats(now)

        def market(sweep: Sweep, work_h: float) -> MarketView | None:
            try:
                return market_for(sweep, self._search(sweep, now), fleet, now, work_h, self.policy)
            except (VastfleetError, OSError) as exc:
                log.warning("sweep %s: offer search failed (%s)", sweep.id, exc)
                return None

        return Observed(now=now, previous=self._previous, instances=by_job, market=market,
                        speed=lambda sweep, inst: speed_of(sweep, inst, now),
                        restart_overhead_s=self.policy.restart_overhead_s)

    # --- one pass -----------------------------------------------------------------------------------

    def run_pass(self) -> bool:
        """True when this process led the pass and saw the market."""
        if not self._lead():
            return False
        open_ids = self.sweeps.open_ids()
        if not open_ids:
            return True
        now = self.clock()
        seen = self.observe(now)
        if seen is None:
            return False
        if not self.fixed_reserve and self._previous is not None:
            self.driver.params.reserve_s = self._reserve(now - self._previous)
        for sweep_id in open_ids:
            if not self._fenced():
                break
            try:
                self.driver.drive(sweep_id, seen)
            except (VastfleetError, redis.RedisError, KeyError, ValueError) as exc:
                log.warning("sweep %s: pass failed: %s: %s", sweep_id, type(exc).__name__, exc)
        self._previous = now
        self.passes += 1
        return True

    def run_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_pass()
            except Exception:
                log.exception("sweep pass crashed")
            self._stop.wait(self.interval_s)
        if self.token is not None:
            try:
                self.lease.release(self.owner, self.token)
            except redis.RedisError:
                pass

    def start(self) -> SweepLoop:
        self._thread = threading.Thread(target=self.run_forever, name="vastfleet-sweeps", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
