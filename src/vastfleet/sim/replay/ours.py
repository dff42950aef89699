"""`ours`: the replay's translator for the live scheduler's own decision step (`policy.step.decide_step`).

Each tick it learns from the present market the way the live loop does (lowest running bids rising, hosts
going offline, offers rented away, and how long they stay away) into `FleetStats`, then builds the step's
input from the replay's state (jobs waiting, the attempts it holds with their offers, the offers rentable
now, those expected back) and turns the decisions into the engine's actions: Place, Raise (change bid),
Release (graceful when the step moves a running attempt). It holds no policy of its own: what it measures
is what the live loop decides. It reads only the current tick and its own memory.
"""

from __future__ import annotations

import numpy as np

from vastfleet.scheduler.policy import (
    FleetStats,
    FutureOffers,
    JobView,
    OfferTable,
    PolicyParams,
    rental_hazards,
)
from vastfleet.scheduler.policy.step import ChangeBid, Held, Move, Place, StepInput, decide_step
from vastfleet.scheduler.policy.waiting import held_until
from vastfleet.sim.replay.engine import Action, JobRun, Raise, Release, Replay
from vastfleet.sim.replay.engine import Place as EnginePlace


class Ours:
    name = "ours"

    def __init__(self, params: PolicyParams | None = None, rebalance_every: int = 6, rebid: bool = True,
                 wait: bool = True) -> None:
        self.params = params
        self.fleet = FleetStats()
        self.prev: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None
        self.final_od: set[str] = set()
        self.rebalance_every = rebalance_every  # ticks between checks for a clearly cheaper offer
        self.rebid = rebid  # lower a running bid (vast's change bid) when the lowest running bid falls
        self.wait = wait  # let jobs wait for an offer expected back (policy.waiting)
        self.seen_price: np.ndarray | None = None  # per offer, its lowest running bid when last available
        self.away: dict[int, tuple[str, float]] = {}  # offer -> (offline | gone, since hours)

    def _params(self, sim: Replay) -> PolicyParams:
        if self.params is None:
            # The fleet's catalogue ceiling is vast's: the public traces are AWS and GCP prices, 4-12x vast's
            # catalogue. The replay runs as an operator of those clouds would configure it: no catalogue ceiling
            # (every bid still stays under its offer's on-demand price).
            self.params = PolicyParams(restart_overhead_s=sim.o.restart_overhead_s,
                                       resume_overhead_s=sim.o.resume_overhead_s, launch_gb=sim.o.launch_gb,
                                       lower_bids=self.rebid, max_price_factor=float("inf"),
                                       max_price_per_gpu_hour=float("inf"))
        return self.params

    def observe(self, sim: Replay, k: int) -> None:
        m = sim.m
        eff, online, gone = sim.eff(k), m.online[k], m.gone[k]
        listed = m.listed(k)
        if self.prev is None:
            for i in np.flatnonzero(listed):
                self.fleet.see(int(m.host[i]), str(m.gpu[i]), float(m.reliability[i]))
        else:
            pk, peff, pon, pgone = self.prev
            self.fleet.advance((k - pk) * m.tick / 3600.0)
            for i in np.flatnonzero(listed & ~m.listed(pk)):
                self.fleet.see(int(m.host[i]), str(m.gpu[i]), float(m.reliability[i]))
            up = listed & online & (eff > peff * (1 + 1e-9)) & (peff > 0)
            for i in np.flatnonzero(up):
                self.fleet.observe_outbid(int(m.host[i]), str(m.gpu[i]), float(eff[i] / peff[i] - 1.0))
            for i in np.flatnonzero(listed & pon & ~online):
                self.fleet.observe_loss(int(m.host[i]), str(m.gpu[i]), offline=True)
            for i in np.flatnonzero(listed & ~pgone & gone & online):
                self.fleet.observe_loss(int(m.host[i]), str(m.gpu[i]), offline=False)
        self.prev = (k, eff.copy(), online.copy(), gone.copy())
        self._track_away(sim, k)

    def _track_away(self, sim: Replay, k: int) -> None:
        """Remember each offer's last price while available, and how long offers stay away (learned)."""
        m = sim.m
        up = m.listed(k) & m.online[k] & ~m.gone[k]
        eff = sim.eff(k)
        self.seen_price = np.where(up, eff, np.nan if self.seen_price is None else self.seen_price)
        now_h = k * m.tick / 3600.0
        cause = np.where(~m.online[k], "offline", np.where(m.gone[k], "gone", ""))
        for i in np.flatnonzero(m.listed(k)):
            was = self.away.get(int(i))
            if was is not None and was[0] != cause[i]:
                self.fleet.observe_back(was[0], now_h - was[1])
                del self.away[int(i)]
            if cause[i] and int(i) not in self.away:
                self.away[int(i)] = (str(cause[i]), now_h)

    def future(self, sim: Replay, k: int, now: float, p: PolicyParams) -> FutureOffers:
        """Offers expected back: those our running jobs hold (free when they end) and those away for now."""
        m = sim.m
        rows: list[int] = []
        when: list[float] = []
        why: list[str] = []
        price: list[float] = []
        for run in sim.active():
            r = run.rental
            if r is None or r.paused:
                continue
            bid, od = rental_hazards(self.fleet, m.host[[r.offer]], m.gpu[[r.offer]], m.reliability[[r.offer]], 0.0)
            hz = float(bid[0] if r.kind == "bid" else od[0])
            rest = run.job.work_hours - sim.progress(run, now)
            rows.append(r.offer)
            when.append(held_until(now, rest, r.speed, hz, r.tau, sim.o.checkpoint_cost_s, p))
            why.append(f"held by our job {run.job.id}")
            price.append(float(sim.eff(k)[r.offer]))
        for i, (cause, _) in self.away.items():
            if self.seen_price is not None and np.isfinite(self.seen_price[i]):
                rows.append(i)
                when.append(now + self.fleet.expected_downtime_h(cause) * 3600.0)
                why.append("host offline" if cause == "offline" else "rented away")
                price.append(float(self.seen_price[i]))
        table = self.table(sim, k, np.array(rows, dtype=np.int64))
        table.min_bid = np.array(price, dtype=float)
        return FutureOffers(table, np.array(when, dtype=float), why)

    def table(self, sim: Replay, k: int, idx: np.ndarray) -> OfferTable:
        m = sim.m
        n = len(idx)
        big = np.full(n, 1e9)
        return OfferTable(
            ids=idx.astype(np.int64), host=m.host[idx], gpu=m.gpu[idx], num_gpus=m.num_gpus[idx], gpu_ram=big,
            cuda=big, dlperf=m.dlperf[idx], dph=m.dph[k, idx], min_bid=sim.eff(k)[idx],
            storage_dph=m.storage_dph[idx], inet_down=big, inet_down_cost=m.inet_down_cost[idx], disk=big,
            reliability=m.reliability[idx], verified=np.ones(n, dtype=bool), ports=np.full(n, 64),
            geo=np.full(n, "", dtype=object),
        )

    def view(self, sim: Replay, run: JobRun, now: float) -> JobView:
        j = run.job
        return JobView(job_id=j.id, gpu_names=j.gpu_names, num_gpus=j.num_gpus,
                       remaining_work_hours=max(j.work_hours - sim.progress(run, now), 1e-6),
                       ref_dlperf=j.ref_dlperf, deadline_at=j.deadline_at,
                       interruption_times=tuple(run.interruptions), checkpoint_cost_s=sim.o.checkpoint_cost_s,
                       interruptible="never" if j.id in self.final_od else "auto")

    def held(self, sim: Replay, k: int, run: JobRun, now: float) -> Held:
        r = run.rental
        assert r is not None
        return Held(self.view(sim, run, now), self.table(sim, k, np.array([r.offer])), r.kind,
                    r.bid if r.kind == "bid" else None, r.paused, r.tau, run.job.id in self.final_od)

    def step(self, sim: Replay, k: int, now: float) -> list[Action]:
        """The replay's translator: its present as the policy's `StepInput`, the decisions as its actions."""
        p = self._params(sim)
        if self.prev is None or self.prev[0] != k:
            self.observe(sim, k)
        avail_idx = np.flatnonzero(sim.available(k))
        active = sim.active()
        inp = StepInput(
            waiting=[self.view(sim, run, now) for run in active if run.rental is None],
            held=[self.held(sim, k, run, now) for run in active if run.rental is not None],
            offers=self.table(sim, k, avail_idx), fleet=self.fleet, now=now, params=p,
            future=self.future(sim, k, now, p) if self.wait and avail_idx.size else None,
            rebalance=k % self.rebalance_every == 0, pinned=frozenset(self.final_od))
        acts: list[Action] = []
        for d in decide_step(inp).decisions:
            if isinstance(d, Place):
                if d.pin:
                    self.final_od.add(d.job_id)
                acts.append(EnginePlace(d.job_id, d.offer_id, d.kind, d.bid or 0.0, d.tau_s))
            elif isinstance(d, ChangeBid):
                acts.append(Raise(d.job_id, d.bid))
            elif isinstance(d, Move):
                if d.pin:
                    self.final_od.add(d.job_id)
                acts.append(Release(d.job_id, graceful=d.graceful))
        return acts
