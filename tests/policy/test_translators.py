"""One decision step, two translators: the live loop's (`PolicyPlacer.decide` over stored jobs, listed
instances and searched offers) and the replay's (`sim.replay.ours.Ours.step` over the engine's state). Given
the same world (offers, waiting jobs, held attempts, the fleet's estimates, now), both must hand the step the
same input, so both make the same decisions: what the benchmark measures is what the live loop decides."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vastfleet.scheduler.plan_types import PolicyRequest
from vastfleet.scheduler.policy import FleetStats, PolicyParams
from vastfleet.scheduler.policy.step import ChangeBid, Move, Place
from vastfleet.scheduler.policy_adapter import PolicyPlacer
from vastfleet.sim.replay.engine import Place as EnginePlace
from vastfleet.sim.replay.engine import Raise, Release, Rental
from vastfleet.sim.replay.ours import Ours
from vastfleet.sim.replay.workload import WorkJob
from vastfleet.spec.gpus import gpu_model
from vastfleet.spec.job import Job, JobState
from vastfleet.spec.jobspec import JobSpec
from vastfleet.spec.market import Instance, Offer

NOW = 1_000_000.0
GPUS = ("RTX 4090", "RTX 3090", "A100 SXM4")
BIG = 1e9  # the replay's unconstrained figures (RAM, CUDA, disk, bandwidth): the live offers match them


@dataclass
class WOffer:
    host: int
    gpu: str
    dph: float  # on demand, compute
    min_bid: float  # the lowest bid that runs now
    reliability: float


@dataclass
class WJob:
    id: str
    gpu: str
    work_hours: float  # the whole job
    remaining: float  # what is left
    deadline_in_h: float | None
    interruptions: tuple[float, ...] = ()


@dataclass
class WHeld:
    job: WJob
    offer: int
    kind: str
    bid: float | None
    paused: bool
    tau_s: float


@dataclass
class World:
    offers: list[WOffer]
    waiting: list[WJob]
    held: list[WHeld]
    rebalance: bool
    fleet: FleetStats = field(default_factory=FleetStats)


@st.composite
def worlds(draw: Any) -> World:
    n = draw(st.integers(2, 8))
    offers = []
    for _ in range(n):
        dph = draw(st.floats(0.15, 3.0))
        offers.append(WOffer(host=draw(st.integers(1, 5)), gpu=draw(st.sampled_from(GPUS)), dph=dph,
                             min_bid=dph * draw(st.floats(0.25, 1.0)), reliability=draw(st.floats(0.8, 1.0))))

    def job(i: int, prefix: str) -> WJob:
        work = draw(st.floats(0.5, 40.0))
        times = tuple(NOW - 3600.0 * t for t in draw(st.lists(st.floats(0.1, 20.0), max_size=4)))
        return WJob(id=f"{prefix}{i}", gpu=draw(st.sampled_from(GPUS)), work_hours=work,
                    remaining=work * draw(st.floats(0.05, 1.0)),
                    deadline_in_h=draw(st.one_of(st.none(), st.floats(0.5, 120.0))), interruptions=times)

    held_offers = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=min(3, n - 1)))
    held = []
    for i, o in enumerate(held_offers):
        j = job(i, "h")
        j.gpu = offers[o].gpu
        kind = draw(st.sampled_from(["bid", "on_demand"]))
        bid = None
        if kind == "bid":
            bid = offers[o].min_bid * draw(st.floats(0.6, 1.2)) if draw(st.booleans()) else offers[o].min_bid
            bid = min(bid, offers[o].dph)
        held.append(WHeld(job=j, offer=o, kind=kind, bid=bid, paused=kind == "bid" and bid < offers[o].min_bid,
                          tau_s=draw(st.floats(300.0, 7200.0))))
    waiting = [job(i, "w") for i in range(draw(st.integers(0, 4)))]
    fleet = FleetStats()
    for o in offers:
        fleet.see(o.host, o.gpu, o.reliability)
    for _ in range(draw(st.integers(0, 6))):  # some outbids and losses learned before this step
        o = draw(st.sampled_from(offers))
        if draw(st.booleans()):
            fleet.observe_outbid(o.host, o.gpu, draw(st.floats(0.01, 0.5)))
        else:
            fleet.observe_loss(o.host, o.gpu, offline=draw(st.booleans()))
    fleet.advance(draw(st.floats(0.0, 48.0)))
    return World(offers=offers, waiting=waiting, held=held, rebalance=draw(st.booleans()), fleet=fleet)


def params() -> PolicyParams:
    return PolicyParams(max_price_factor=float("inf"), max_price_per_gpu_hour=float("inf"))


# --- the live translator's input: stored jobs, listed instances, searched offers ----------------------------


def live_offer(i: int, o: WOffer) -> Offer:
    model = gpu_model(o.gpu)
    return Offer(id=i, machine_id=1000 + i, host_id=o.host, gpu_name=model.name, num_gpus=1, gpu_ram_gb=BIG,
                 cuda_max_good=BIG, dlperf=model.dlperf, dph_total=o.min_bid, dph_base=o.dph, min_bid=o.min_bid,
                 disk_space=BIG, reliability=o.reliability, verified=True, direct_port_count=64, inet_down=BIG,
                 geolocation="", is_bid=True)


def live_job(j: WJob, state: JobState, **fields: Any) -> Job:
    spec = JobSpec.model_validate({
        "name": j.id, "image": "python:3.11-slim", "run": "python train.py", "work_hours": j.work_hours,
        "resources": {"gpu": [j.gpu], "gpus": 1, "disk_gb": 20, "min_reliability": 0.0, "verified": False}})
    deadline = None if j.deadline_in_h is None else NOW + 3600.0 * j.deadline_in_h
    return Job(id=j.id, spec=spec, state=state, epoch=1, submitted_at=NOW - 100.0, updated_at=NOW,
               deadline_at=deadline, progress={"remaining_hours": j.remaining},
               interrupted_at=list(j.interruptions), **fields)


def live_decisions(w: World) -> list[tuple[Any, ...]]:
    placer = PolicyPlacer(params())
    placer.recall(copy.deepcopy(w.fleet))
    taken = {h.offer for h in w.held}
    found = [live_offer(i, o) for i, o in enumerate(w.offers) if i not in taken]
    held: dict[str, list[tuple[Job, Instance]]] = {"paused": [], "running": []}
    for h in w.held:
        o = w.offers[h.offer]
        job = live_job(h.job, JobState.PAUSED if h.paused else JobState.RUNNING, instance_id=h.offer,
                       offer_id=h.offer, bid=h.bid, offer_dph=o.dph, machine_id=1000 + h.offer)
        pays = h.bid if h.bid is not None else o.dph
        inst = Instance(id=h.offer, machine_id=1000 + h.offer, host_id=o.host, gpu_name=o.gpu, num_gpus=1,
                        dph_total=pays, dph_base=pays, is_bid=h.kind == "bid", min_bid=o.min_bid, bid_price=h.bid,
                        disk_space=20.0, reliability=o.reliability)
        placer.checkpoint_interval = lambda job, cost=None, _h=w.held: next(  # type: ignore[method-assign]
            x.tau_s for x in _h if x.job.id == job.id)
        held["paused" if h.paused else "running"].append((job, inst))
    pending = [live_job(j, JobState.PENDING) for j in w.waiting]
    # the same snapshot on both sides: every offer rentable now, whoever asked for it (the loop searches for
    # running jobs only on rebalance passes; that is its observation, upstream of the translator)
    asking = pending + [job for job, _ in held["paused"]] + [job for job, _ in held["running"]]
    request = PolicyRequest(now=NOW, offers={job.id: found for job in asking}, pending=pending,
                            paused=held["paused"], running=held["running"], rebalance=w.rebalance)
    return normal(placer.decide(request))


# --- the replay translator's input: the engine's market arrays and runs ------------------------------------


def replay_decisions(w: World) -> list[tuple[Any, ...]]:
    n = len(w.offers)
    taken = {h.offer for h in w.held}
    m = SimpleNamespace(
        host=np.array([o.host for o in w.offers], dtype=np.int64),
        gpu=np.array([gpu_model(o.gpu).name for o in w.offers], dtype=object),
        num_gpus=np.ones(n, dtype=np.int64), dlperf=np.array([gpu_model(o.gpu).dlperf for o in w.offers]),
        dph=np.array([[o.dph for o in w.offers]] * 2), storage_dph=np.zeros(n), inet_down_cost=np.zeros(n),
        reliability=np.array([o.reliability for o in w.offers]))
    runs = []
    for j in w.waiting:
        runs.append(SimpleNamespace(job=work_job(j), rental=None, interruptions=list(j.interruptions)))
    for h in w.held:
        rental = Rental(offer=h.offer, kind=h.kind, bid=h.bid or 0.0, start=NOW, overhead=0.0,  # type: ignore[arg-type]
                        tau=h.tau_s, base_work=0.0, speed=1.0, paused=h.paused)
        runs.append(SimpleNamespace(job=work_job(h.job), rental=rental, interruptions=list(h.job.interruptions)))
    left = {r.job.id: next(x.remaining for x in [*w.waiting, *(h.job for h in w.held)] if x.id == r.job.id)
            for r in runs}
    sim = SimpleNamespace(
        m=m, o=SimpleNamespace(checkpoint_cost_s=60.0),
        eff=lambda k: np.array([o.min_bid for o in w.offers]),
        available=lambda k: np.array([i not in taken for i in range(n)]),
        active=lambda: runs,
        progress=lambda run, now: run.job.work_hours - left[run.job.id])
    ours = Ours(params(), rebalance_every=1 if w.rebalance else 10**9, wait=False)
    ours.fleet = copy.deepcopy(w.fleet)
    ours.prev = (1, np.zeros(n), np.ones(n, dtype=bool), np.zeros(n, dtype=bool))  # learned already: no observe
    actions = ours.step(sim, 1, NOW)  # type: ignore[arg-type]
    out: list[tuple[Any, ...]] = []
    for a in actions:
        if isinstance(a, EnginePlace):
            out.append(("place", a.job_id, a.offer, a.kind, round(a.bid, 6) if a.kind == "bid" else None,
                        round(a.tau, 3)))
        elif isinstance(a, Raise):
            out.append(("bid", a.job_id, round(a.bid, 6)))
        elif isinstance(a, Release):
            out.append(("move", a.job_id, a.graceful))
    return sorted(out, key=repr)


def work_job(j: WJob) -> WorkJob:
    return WorkJob(id=j.id, submit=NOW - 100.0, work_hours=j.work_hours, ref_dlperf=0.0, gpu_names=(j.gpu,),
                   deadline=None if j.deadline_in_h is None else 100.0 + 3600.0 * j.deadline_in_h)


def normal(decisions: list[Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for d in decisions:
        if isinstance(d, Place):
            out.append(("place", d.job_id, d.offer_id, d.kind, round(d.bid, 6) if d.kind == "bid" and d.bid else None,
                        round(d.tau_s, 3)))
        elif isinstance(d, ChangeBid):
            out.append(("bid", d.job_id, round(d.bid, 6)))
        elif isinstance(d, Move):
            out.append(("move", d.job_id, d.graceful))
    return sorted(out, key=repr)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_the_live_and_the_replay_translators_make_the_same_decisions(w: World) -> None:
    assert live_decisions(w) == replay_decisions(w)


def test_the_comparison_sees_decisions() -> None:
    """Not vacuous: a waiting job and a free offer give a placement on both sides."""
    w = World(offers=[WOffer(1, "RTX 4090", 0.5, 0.2, 0.99), WOffer(2, "RTX 4090", 0.6, 0.3, 0.99)],
              waiting=[WJob("w0", "RTX 4090", 4.0, 4.0, None)], held=[], rebalance=False)
    for o in w.offers:
        w.fleet.see(o.host, o.gpu, o.reliability)
    live, replay = live_decisions(w), replay_decisions(w)
    assert live and live[0][:2] == ("place", "w0")
    assert live == replay


def test_released_jobs_are_placed_in_one_order_however_the_attempts_are_listed() -> None:
    """Two running bids on dear offers both move to the two cheap ones: which goes where may not depend on the
    order a translator lists them in (the live loop lists paused attempts first, the replay its runs)."""
    offers = [WOffer(1, "RTX 4090", 3.0, 2.9, 0.99), WOffer(2, "RTX 4090", 3.0, 2.9, 0.99),
              WOffer(3, "RTX 4090", 0.5, 0.20, 0.99), WOffer(4, "RTX 4090", 0.5, 0.25, 0.99)]
    held = [WHeld(WJob(f"h{i}", "RTX 4090", 20.0, 10.0, None), offer=i, kind="bid", bid=2.9, paused=False,
                  tau_s=3600.0) for i in (0, 1)]
    decided = []
    for order in (held, held[::-1]):
        w = World(offers=offers, waiting=[], held=list(order), rebalance=True)
        for o in offers:
            w.fleet.see(o.host, o.gpu, o.reliability)
        decided.append((live_decisions(w), replay_decisions(w)))
    (live, replay), (live_reversed, replay_reversed) = decided
    assert [d[0] for d in live].count("move") == 2 and [d[0] for d in live].count("place") == 2, live
    assert live == replay == live_reversed == replay_reversed
