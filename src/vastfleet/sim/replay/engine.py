"""The discrete-event replay of a market trace in virtual time: rentals, pauses, checkpoints, billing.

Time advances tick by tick over the compiled trace (events sit on ticks; job completions fall between).
A bid rental runs while its host is online, the offer is not rented away, and its bid is at least the
lowest running bid (max of min_bid and the competing bid); it pays its bid. An outbid rental is paused
(disk kept, storage billed) until its policy raises the bid, moves, or the market comes back. Work since
the last checkpoint is lost at zero notice. Policies see only the present tick and what they remember.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from vastfleet.sim.replay.trace import Market
from vastfleet.sim.replay.workload import WorkJob


@dataclass(frozen=True)
class Options:
    restart_overhead_s: float = 300.0
    resume_overhead_s: float = 120.0
    checkpoint_cost_s: float = 60.0
    launch_gb: float = 5.0
    # Cloud spot (AWS, GCP; the published settings): a bid rental pays the lowest running bid of each tick and only
    # a competing bid above it pauses it (capacity), not a rise of min_bid. Off: vast's model, a bid pays its bid.
    spot_pays_market: bool = False


@dataclass
class Rental:
    offer: int
    kind: Literal["bid", "on_demand"]
    bid: float
    start: float  # time the current segment began (boot or resume)
    overhead: float  # seconds of no progress at the segment start
    tau: float  # checkpoint interval (seconds of work)
    base_work: float  # work-hours saved when the segment began
    speed: float
    paused: bool = False


@dataclass
class JobRun:
    job: WorkJob
    work: float = 0.0  # saved work-hours (at ref DLPerf)
    rental: Rental | None = None
    done_at: float | None = None
    interruptions: list[float] = field(default_factory=list)
    compute: float = 0.0
    storage: float = 0.0
    bandwidth: float = 0.0
    lost_gpu_h: float = 0.0
    bid_hours: float = 0.0  # hours rented as a running bid (the exposure interruptions are counted against)
    submitted: bool = False

    @property
    def dollars(self) -> float:
        return self.compute + self.storage + self.bandwidth

    @property
    def state(self) -> str:
        if self.done_at is not None:
            return "done"
        if self.rental is None:
            return "waiting"
        return "paused" if self.rental.paused else "running"


@dataclass(frozen=True)
class Place:
    job_id: str
    offer: int
    kind: Literal["bid", "on_demand"]
    bid: float = 0.0
    tau: float = 1800.0


@dataclass(frozen=True)
class Raise:
    """Change the bid (vast's `change bid`): resumes a paused rental; a running one keeps running if it
    still covers the lowest running bid, else the change is refused."""

    job_id: str
    bid: float


@dataclass(frozen=True)
class Release:
    """Stop the job's instance: `graceful` checkpoints first (costs the checkpoint time, loses nothing)."""

    job_id: str
    graceful: bool = False


Action = Place | Raise | Release


class ReplayPolicy(Protocol):
    name: str

    def step(self, sim: Replay, k: int, now: float) -> list[Action]: ...


def _productive(e: float, tau: float, c: float) -> tuple[float, float]:
    """(work seconds done, work seconds saved) after e seconds of running with checkpoints every tau."""
    if e <= 0:
        return 0.0, 0.0
    cycle = tau + c
    k = math.floor(e / cycle)
    r = e - k * cycle
    return k * tau + min(r, tau), k * tau


def _time_to(work_s: float, tau: float, c: float) -> float:
    """Seconds of running needed to do `work_s` seconds of work (checkpoints on the way)."""
    if work_s <= 0:
        return 0.0
    k = math.ceil(work_s / tau) - 1
    return k * (tau + c) + (work_s - k * tau)


class Replay:
    """One policy over one market and workload."""

    def __init__(self, market: Market, jobs: list[WorkJob], options: Options) -> None:
        self.m = market
        self.o = options
        self.runs = {j.id: JobRun(j) for j in jobs}
        self.order = [j.id for j in jobs]
        self.used = np.zeros(len(market.offer_keys), dtype=np.int64)

    # --- the present, as policies see it --------------------------------------------------------------

    def eff(self, k: int) -> np.ndarray:
        return np.maximum(self.m.floor[k], self.m.comp[k])

    def available(self, k: int) -> np.ndarray:
        """Offers that can be rented now (listed, host online, not rented away, capacity left)."""
        m = self.m
        return m.listed(k) & m.online[k] & ~m.gone[k] & (self.used < m.capacity)

    def active(self) -> list[JobRun]:
        return [self.runs[i] for i in self.order if self.runs[i].submitted and self.runs[i].done_at is None]

    def progress(self, run: JobRun, now: float) -> float:
        """Work-hours done so far, saved or not (what the job's heartbeat reports)."""
        r = run.rental
        if r is None or r.paused:
            return run.work
        done, _ = _productive(now - r.start - r.overhead, r.tau, self.o.checkpoint_cost_s)
        return min(run.job.work_hours, r.base_work + r.speed * done / 3600.0)

    # --- mechanics ------------------------------------------------------------------------------------

    def _rate(self, r: Rental, k: int) -> float:
        if r.kind == "bid":
            if self.o.spot_pays_market:
                return max(float(self.m.floor[k, r.offer]), float(self.m.comp[k, r.offer]))
            return r.bid
        return float(self.m.dph[k, r.offer])

    def _holds(self, k: int) -> np.ndarray:
        """Per offer, the price a running bid must cover to keep running (the competing bid alone on cloud spot)."""
        return self.m.comp[k] if self.o.spot_pays_market else self.eff(k)

    def _advance(self, run: JobRun, t0: float, t1: float, k: int) -> None:
        r = run.rental
        if r is None or run.done_at is not None:
            return
        st = float(self.m.storage_dph[r.offer])
        if r.paused:
            run.storage += st * (t1 - t0) / 3600.0
            return
        c = self.o.checkpoint_cost_s
        need = (run.job.work_hours - r.base_work) * 3600.0 / r.speed
        finish = r.start + r.overhead + _time_to(need, r.tau, c)
        end = min(t1, finish)
        run.compute += self._rate(r, k) * (end - t0) / 3600.0
        run.storage += st * (end - t0) / 3600.0
        if r.kind == "bid":
            run.bid_hours += max(end - t0, 0.0) / 3600.0
        if finish <= t1:
            run.done_at = finish
            run.work = run.job.work_hours
            self._drop(run)

    def _drop(self, run: JobRun) -> None:
        if run.rental is not None:
            self.used[run.rental.offer] -= 1
            run.rental = None

    def _interrupt(self, run: JobRun, now: float, destroy: bool) -> None:
        r = run.rental
        assert r is not None
        e = now - r.start - r.overhead
        _, saved = _productive(e, r.tau, self.o.checkpoint_cost_s)
        run.work = min(run.job.work_hours, r.base_work + r.speed * saved / 3600.0)
        cycle = r.tau + self.o.checkpoint_cost_s
        wasted = min(now - r.start, r.overhead) + (max(e, 0.0) - math.floor(max(e, 0.0) / cycle) * cycle)
        run.lost_gpu_h += wasted / 3600.0 * float(self.m.num_gpus[r.offer])
        run.interruptions.append(now)
        if destroy:
            self._drop(run)
        else:
            r.paused = True

    def _start(self, run: JobRun, a: Place, now: float) -> None:
        speed = float(self.m.dlperf[a.offer]) / run.job.ref_dlperf
        run.rental = Rental(a.offer, a.kind, a.bid, now, self.o.restart_overhead_s, max(a.tau, 60.0), run.work, speed)
        self.used[a.offer] += 1
        run.bandwidth += float(self.m.inet_down_cost[a.offer]) * self.o.launch_gb

    def _resume(self, r: Rental, run: JobRun, now: float) -> None:
        r.paused = False
        r.start, r.overhead, r.base_work = now, self.o.resume_overhead_s, run.work

    def _market_effects(self, k: int, now: float) -> None:
        m = self.m
        eff = self._holds(k)
        for run in self.active():
            r = run.rental
            if r is None:
                continue
            o = r.offer
            lost = not m.online[k, o] or (r.kind == "bid" and m.gone[k, o])
            if lost:
                if r.paused:
                    self._drop(run)
                else:
                    self._interrupt(run, now, destroy=True)
            elif r.kind == "bid" and not r.paused and eff[o] > r.bid + 1e-12:
                self._interrupt(run, now, destroy=False)
            elif r.paused and eff[o] <= r.bid + 1e-12:
                self._resume(r, run, now)

    def _apply(self, actions: list[Action], k: int, now: float) -> None:
        avail = self.available(k)
        eff = self.eff(k)
        for a in actions:
            run = self.runs[a.job_id]
            if run.done_at is not None:
                continue
            if isinstance(a, Release):
                r = run.rental
                if r is None:
                    continue
                if a.graceful and not r.paused:
                    # checkpoint now: the work so far is saved, the checkpoint time is billed
                    run.work = self.progress(run, now)
                    c = self.o.checkpoint_cost_s
                    run.compute += self._rate(r, k) * c / 3600.0
                    run.storage += float(self.m.storage_dph[r.offer]) * c / 3600.0
                    self._drop(run)
                elif r.paused:
                    self._drop(run)
                else:
                    self._interrupt(run, now, destroy=True)
                    run.interruptions.pop()  # our own choice, not an interruption
            elif isinstance(a, Raise):
                r = run.rental
                if r is not None and r.kind == "bid" and a.bid >= eff[r.offer] - 1e-12:
                    r.bid = a.bid
                    if r.paused:
                        self._resume(r, run, now)
            else:
                if run.rental is not None or not avail[a.offer]:
                    continue
                if a.kind == "bid" and a.bid < eff[a.offer] - 1e-12:
                    continue
                if self.m.num_gpus[a.offer] < run.job.num_gpus or self.m.gpu[a.offer] not in run.job.gpu_names:
                    continue
                self._start(run, a, now)
                avail = self.available(k)

    def run(self, policy: ReplayPolicy) -> dict[str, JobRun]:
        m = self.m
        dt = float(m.tick)
        pending = list(self.order)
        for k in range(m.n_ticks):
            now = k * dt
            if k > 0:
                for run in self.active():
                    self._advance(run, now - dt, now, k - 1)
            while pending and self.runs[pending[0]].job.submit <= now:
                self.runs[pending.pop(0)].submitted = True
            if not self.active():
                if not pending:
                    break
                continue
            self._market_effects(k, now)
            for _ in range(4):  # several passes when offers can hold more than one job
                acts = policy.step(self, k, now)
                if not acts:
                    break
                before = self.used.sum()
                self._apply(acts, k, now)
                if self.used.sum() == before or (m.capacity <= 1).all():
                    break
        return self.runs
