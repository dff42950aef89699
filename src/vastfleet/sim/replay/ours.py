"""`ours`: the vastfleet policy (`vastfleet.scheduler.policy`) driven by the replay.

Each tick it observes the present market the way the live loop does (lowest running bids rising, hosts
going offline, offers rented away, and how long they stay away) into `FleetStats`, then: paused jobs raise
or move by expected cost; running interruptible jobs whose slack no longer covers an interruption checkpoint
and move to on demand; waiting jobs go through the one allocator, which may have them wait for an offer
expected back (one our own job holds, or one that went away; `policy.waiting`). Checkpoint cadence per
rental is Young/Daly from the hazard. It reads only the current tick and its own memory.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from vastfleet.scheduler.policy import (
    FleetStats,
    FutureOffers,
    JobView,
    OfferTable,
    PolicyParams,
    decide_on_table,
    interruptible_allowed,
    lower_running_bid,
    outbid_decision,
    rental_hazards,
    should_escalate_to_on_demand,
)
from vastfleet.scheduler.policy.cost import young_daly
from vastfleet.scheduler.policy.waiting import held_until
from vastfleet.sim.replay.baselines import job_mask, slack
from vastfleet.sim.replay.engine import Action, JobRun, Place, Raise, Release, Replay


class Ours:
    name = "ours"

    def __init__(self, params: PolicyParams | None = None, rebalance_every: int = 6, hysteresis: float = 0.08,
                 rebid: bool = True, wait: bool = True) -> None:
        self.params = params
        self.fleet = FleetStats()
        self.prev: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None
        self.final_od: set[str] = set()
        self.rebalance_every = rebalance_every  # ticks between checks for a clearly cheaper offer
        self.hysteresis = hysteresis  # a move must save this share of the expected cost to stay
        self.rebid = rebid  # lower a running bid (vast's change bid) when the lowest running bid falls
        self.wait = wait  # let jobs wait for an offer expected back (policy.waiting)
        self.last_eff: np.ndarray | None = None
        self.seen_price: np.ndarray | None = None  # per offer, its lowest running bid when last available
        self.away: dict[int, tuple[str, float]] = {}  # offer -> (offline | gone, since hours)

    def _params(self, sim: Replay) -> PolicyParams:
        if self.params is None:
            self.params = PolicyParams(restart_overhead_s=sim.o.restart_overhead_s,
                                       resume_overhead_s=sim.o.resume_overhead_s, launch_gb=sim.o.launch_gb)
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

    def _better_elsewhere(self, sim: Replay, k: int, now: float, run: JobRun, avail_idx: np.ndarray,
                          p: PolicyParams) -> bool:
        """Move a running bid when another offer finishes clearly cheaper, the move's restart included."""
        r = run.rental
        assert r is not None
        jv = self.view(sim, run, now)
        here = self.table(sim, k, np.array([r.offer]))
        here.min_bid = np.array([r.bid])
        stay = decide_on_table([jv], here, self.fleet, now, replace(p, margins=(0.0,)), first_overhead_s=0.0,
                               bandwidth=False)
        if not stay or stay[0].kind != "bid":
            return False
        moves = decide_on_table([jv], self.table(sim, k, avail_idx), self.fleet, now, p)
        return bool(moves) and moves[0].expected_cost < (1.0 - self.hysteresis) * stay[0].expected_cost

    def _back_to_bid(self, sim: Replay, k: int, now: float, run: JobRun, avail_idx: np.ndarray,
                     p: PolicyParams) -> bool:
        """An escalated job returns to interruptible capacity once the storm is over and it pays clearly."""
        if should_escalate_to_on_demand(run.interruptions, now, p) or k % 6:
            return False
        jv = self.view(sim, run, now)
        r = run.rental
        assert r is not None
        od_left = float(sim.m.dph[k, r.offer]) * jv.remaining_work_hours / r.speed
        for pl in decide_on_table([jv], self.table(sim, k, avail_idx), self.fleet, now, p):
            return pl.kind == "bid" and pl.expected_cost < 0.8 * od_left
        return False

    def _slack(self, sim: Replay, run: JobRun, now: float, mask: np.ndarray, avail: np.ndarray) -> float:
        """Slack on the fastest fitting offer that can be rented now (or is ours), not the fastest listed."""
        here = mask & avail
        if run.rental is not None:
            here[run.rental.offer] = True
        return slack(sim, run, now, here if here.any() else mask)

    def _rebid(self, sim: Replay, k: int, now: float, run: JobRun, p: PolicyParams) -> Raise | None:
        """The lowest running bid fell under our running bid: lower ours to the margin that is best now."""
        r = run.rental
        assert r is not None
        eff = sim.eff(k)
        if self.last_eff is None or not eff[r.offer] < self.last_eff[r.offer] * (1 - 1e-9):
            return None
        bid = lower_running_bid(self.view(sim, run, now), self.table(sim, k, np.array([r.offer])), r.bid,
                                self.fleet, p)
        return None if bid is None else Raise(run.job.id, bid)

    def step(self, sim: Replay, k: int, now: float) -> list[Action]:
        p = self._params(sim)
        if self.prev is None or self.prev[0] != k:
            self.last_eff = None if self.prev is None else self.prev[1]
            self.observe(sim, k)
        acts: list[Action] = []
        waiting: list[JobView] = []
        avail = sim.available(k)
        avail_idx = np.flatnonzero(avail)
        for run in sim.active():
            r = run.rental
            jid = run.job.id
            mask = job_mask(sim, run)
            if r is None:
                waiting.append(self.view(sim, run, now))
                continue
            if r.kind == "on_demand":
                if jid not in self.final_od and self._back_to_bid(sim, k, now, run, avail_idx, p):
                    acts.append(Release(jid, graceful=True))
                    waiting.append(self.view(sim, run, now))
                continue
            tau = float(young_daly(sim.o.checkpoint_cost_s, np.array([0.05]), p)[0]) if r.paused else r.tau
            if not interruptible_allowed(self._slack(sim, run, now, mask, avail), tau, p, sim.o.checkpoint_cost_s):
                self.final_od.add(jid)
                acts.append(Release(jid, graceful=not r.paused))
                waiting.append(self.view(sim, run, now))
                continue
            if not r.paused and k % self.rebalance_every == 0 and self._better_elsewhere(sim, k, now, run, avail_idx, p):
                acts.append(Release(jid, graceful=True))
                waiting.append(self.view(sim, run, now))
                continue
            if not r.paused and self.rebid:
                rb = self._rebid(sim, k, now, run, p)
                if rb is not None:
                    acts.append(rb)
            if r.paused:
                jv = self.view(sim, run, now)
                d = outbid_decision(jv, self.table(sim, k, np.array([r.offer])), self.table(sim, k, avail_idx),
                                    self.fleet, now, p)
                if d.action == "raise" and d.bid is not None:
                    acts.append(Raise(jid, d.bid))
                else:
                    acts.append(Release(jid))
                    waiting.append(jv)
        if waiting and avail_idx.size:
            future = self.future(sim, k, now, p) if self.wait else None
            for pl in decide_on_table(waiting, self.table(sim, k, avail_idx), self.fleet, now, p, future=future):
                if pl.kind == "on_demand" and pl.job_id not in self.final_od:
                    run = sim.runs[pl.job_id]
                    if not interruptible_allowed(self._slack(sim, run, now, job_mask(sim, run), avail), 1800.0, p,
                                                 sim.o.checkpoint_cost_s):
                        self.final_od.add(pl.job_id)
                tau = float(pl.terms.get("checkpoint_interval_s", 1800.0))
                acts.append(Place(pl.job_id, pl.offer_id, pl.kind, pl.bid or 0.0, tau))
        return acts
