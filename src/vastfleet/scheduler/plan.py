"""`decide(snapshot, now) -> Plan`: the reconcile pass as a pure function of what was observed.

The snapshot holds both sides, re-read every pass (level-triggered): the jobs, one SUCCESSFUL marketplace
listing, the agents' heartbeats, the offers searched for pending jobs, the creates in flight and the durable
destroy obligations. The plan is a list of actions that one applier executes in order:

    Transition   a job state change through the JobStore (epoch-fenced; a refused one stops that job's chain)
    Create       rent an offer for (job, epoch): idempotent by the label `vf:<job>:<epoch>`
    Adopt        (a Transition PLACING -> BOOTING naming an instance found by its label)
    Destroy      record a durable obligation and drive it until the listing shows the instance gone
    Forget       the listing shows an obligation's instance gone: drop the obligation
    RaiseBid     change the bid of a paused instance of ours and start it again (or lower a running one's)

A paused RUNNING attempt reads PAUSED from the first pass that sees it (the reason says what is being
decided); the placer sees the fleet's own rentals (`Holdings`) so that no placement or re-bid of ours takes
GPUs another of ours holds. An attempt that ends without progress (no checkpoint committed in it) counts
against `max_fruitless`, whatever its cause: a job can never rent forever.

A settled world (every attempt healthy, no pending job, no obligation) yields an empty plan, so a second
pass makes no marketplace call but the listing. Never does I/O; never reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vastfleet.scheduler.labels import parse_label
from vastfleet.scheduler.placement import Placer, simple_placements
from vastfleet.scheduler.policy.fleet import Holdings, Rental
from vastfleet.scheduler.supervise import Beat, Cause, Health, Observation, Timings, Verdict, supervise
from vastfleet.scheduler.teardown import may_destroy
from vastfleet.spec.job import ATTEMPT_STATES, Job, JobState
from vastfleet.spec.market import Instance, Offer

S = JobState


@dataclass(frozen=True)
class Transition:
    job_id: str
    to: JobState
    reason: str
    expected_epoch: int
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Create:
    job_id: str
    epoch: int  # the epoch the instance is for; for a new placement, the one PENDING -> PLACING creates
    offer_id: int
    bid: float | None
    reason: str = ""


@dataclass(frozen=True)
class Destroy:
    instance_id: int
    job_id: str | None
    epoch: int | None
    reason: str


@dataclass(frozen=True)
class Forget:
    instance_id: int
    reason: str


@dataclass(frozen=True)
class RaiseBid:
    """Change an interruptible instance's bid (vast's `change bid`); `start` restarts a paused one. A running
    instance whose lowest running bid fell gets a lower bid with start=False: no restart, nothing lost.
    `ceiling`: the applier refuses a price above it (the offer's on-demand price or the fleet's ceiling)."""

    job_id: str
    instance_id: int
    price: float
    reason: str
    start: bool = True
    ceiling: float = float("inf")
    fields: Mapping[str, Any] = field(default_factory=dict)  # written to the job with the new bid


Action = Transition | Create | Destroy | Forget | RaiseBid


@dataclass(frozen=True)
class PlanParams:
    timings: Timings = field(default_factory=Timings)
    outbid_wait_s: float = 120.0  # a paused bid may come back by itself: wait this long before re-queueing
    label_prefix: str = "vf"
    max_fruitless: int = 6  # attempts in a row without progress before the job fails (every cause counts)
    quarantine_keep_s: float = 6 * 3600.0  # an instance of a job whose record is quarantined is kept this long


@dataclass(frozen=True)
class OutbidChoice:
    action: str  # "wait" | "raise" | "requeue"
    price: float | None = None
    reason: str = ""


def default_on_outbid(job: Job, instance: Instance, silent_for: float, params: PlanParams,
                      holdings: Holdings | None = None) -> OutbidChoice:
    """Wait a bounded time for the auction to come back, then move the job elsewhere."""
    if silent_for < params.outbid_wait_s:
        return OutbidChoice("wait", reason=f"paused {silent_for:.0f}s, waiting up to {params.outbid_wait_s:.0f}s")
    return OutbidChoice("requeue", reason=f"paused {silent_for:.0f}s: re-queueing on a new offer")


@dataclass(frozen=True)
class Snapshot:
    jobs: Mapping[str, Job]  # non-terminal jobs, plus any job a labelled instance names (None: unknown)
    instances: Sequence[Instance]  # one successful listing; never a failed one taken as empty
    beats: Mapping[str, Beat] = field(default_factory=dict)
    offers: Mapping[str, Sequence[Offer]] = field(default_factory=dict)  # per pending job id
    creating: frozenset[tuple[str, int]] = frozenset()  # (job, epoch) creates in flight
    obligations: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)  # instance id -> why
    destroying: frozenset[int] = frozenset()  # destroys in flight
    quarantined: Mapping[str, float] = field(default_factory=dict)  # job id -> when its record was set aside


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    verdicts: dict[int | str, Verdict] = field(default_factory=dict)  # instance id (or job id) -> verdict
    waiting: dict[int, str] = field(default_factory=dict)  # instances teardown keeps, and why

    def of(self, kind: type) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]

    def __bool__(self) -> bool:
        return bool(self.actions)


def decide(snap: Snapshot, now: float, params: PlanParams = PlanParams(),
           place: Placer = simple_placements, on_outbid: Any = default_on_outbid,
           lower_bid: Callable[[Job, Instance], tuple[float, str] | None] | None = None) -> Plan:
    """`lower_bid(job, instance)`: a lower bid for a healthy running bid whose lowest running bid fell, with
    its reason, or None to keep the bid (the policy's `lower_running_bid`; None: never lower)."""
    plan = Plan()
    ours: list[tuple[Instance, str, int]] = []
    for inst in snap.instances:
        parsed = parse_label(inst.label, params.label_prefix)
        if parsed is not None:  # an unlabelled instance is not provably ours: never touched
            ours.append((inst, *parsed))
    by_label: dict[tuple[str, int], list[Instance]] = {}
    for inst, job_id, epoch in ours:
        by_label.setdefault((job_id, epoch), []).append(inst)
    holdings = fleet_holdings(snap, ours, by_label)
    destroy_ids: set[int] = set()

    def destroy(inst_id: int, job_id: str | None, epoch: int | None, reason: str) -> None:
        if inst_id in destroy_ids:
            return
        destroy_ids.add(inst_id)
        if inst_id not in snap.destroying:
            plan.actions.append(Destroy(inst_id, job_id, epoch, reason))

    # 1. Every instance of ours: supervise it against its job.
    handled_jobs: set[str] = set()
    for inst, job_id, epoch in ours:
        job = snap.jobs.get(job_id)
        if job is not None and job.state == S.PLACING and epoch == job.epoch and job.instance_id is None:
            continue  # adoption, below
        if job is None and job_id in snap.quarantined:
            # Its record cannot be read, so nothing says its checkpoints are off the box: keep it for the operator
            # to repair and release the job (or cancel it), within a bound: never billing forever.
            age = now - snap.quarantined[job_id]
            if age < params.quarantine_keep_s:
                plan.waiting[inst.id] = (f"job {job_id} is quarantined: kept {age / 3600:.1f} h of"
                                         f" {params.quarantine_keep_s / 3600:.0f} h for its release")
                continue
            destroy(inst.id, job_id, epoch, f"job {job_id} quarantined {age / 3600:.1f} h ago and never released")
            continue
        obs = Observation(job, inst, epoch, snap.beats.get(job_id), now, params.timings)
        verdict = supervise(obs)
        plan.verdicts[inst.id] = verdict
        if verdict.health in (Health.orphan, Health.dead):
            gate = may_destroy(verdict, job, snap.beats.get(job_id), now, params.timings)
            if gate.allowed:
                destroy(inst.id, job_id, epoch, gate.reason)
            else:
                plan.waiting[inst.id] = gate.reason
            continue
        assert job is not None
        handled_jobs.add(job_id)
        _attempt(plan, job, inst, obs, verdict, params, on_outbid, holdings, now)
        if (lower_bid is not None and verdict.health == Health.healthy and job.state == S.RUNNING
                and inst.is_bid and job.bid is not None and epoch == job.epoch):
            lowered = lower_bid(job, inst)
            if lowered is not None and lowered[0] < job.bid:
                plan.actions.append(RaiseBid(job.id, inst.id, lowered[0], lowered[1], start=False,
                                             ceiling=job.bid))

    # 2. Attempts whose instance the listing does not show (BOOTING / RUNNING with an instance id).
    for job in snap.jobs.values():
        if job.id in handled_jobs or job.state not in ATTEMPT_STATES:
            continue
        obs = Observation(job, None, None, snap.beats.get(job.id), now, params.timings)
        verdict = supervise(obs)
        plan.verdicts[job.id] = verdict
        _attempt(plan, job, None, obs, verdict, params, on_outbid, holdings, now)

    # 2b. INTERRUPTED left behind (a pass that died between its two transitions, or the agent reported a
    # host fault): finish the recovery.
    for job in snap.jobs.values():
        if job.state == S.INTERRUPTED:
            _requeue(plan, job, job.preemptions, params, progressed=_progressed(job, False), last=job.reason)

    # 3. PLACING: adopt an instance that carries the attempt's label, else drive the create again.
    for job in snap.jobs.values():
        if job.state != S.PLACING:
            continue
        found = sorted(by_label.get((job.id, job.epoch), []), key=lambda i: i.id)
        if found:
            keep = found[0]
            plan.actions.append(Transition(job.id, S.BOOTING, f"instance {keep.id} found by its label",
                                           job.epoch, {"instance_id": keep.id}))
            for extra in found[1:]:  # two rentals for one attempt: keep one, the other goes
                destroy(extra.id, job.id, job.epoch, "duplicate rental of one attempt")
        elif (job.id, job.epoch) not in snap.creating:
            if job.offer_id is None:
                plan.actions.append(Transition(job.id, S.PENDING, "no offer recorded for the create", job.epoch))
            else:
                plan.actions.append(Create(job.id, job.epoch, job.offer_id, job.bid, "create not in flight"))

    # 4. Placement of pending jobs.
    pending = sorted((j for j in snap.jobs.values() if j.state == S.PENDING),
                     key=lambda j: (-j.spec.priority, j.submitted_at))
    if pending and snap.offers:
        for p in place(pending, snap.offers, now, holdings=holdings):
            job = snap.jobs[p.job_id]
            cost = p.price if math.isfinite(p.price) else None
            offer = next((o for o in snap.offers.get(job.id, ()) if o.id == p.offer_id), None)
            fields = {"offer_id": p.offer_id, "bid": p.bid, "instance_id": None, "offer_dph": p.offer_dph,
                      "machine_id": p.machine_id, "offer_cpus": offer.cpu_cores_effective if offer else None,
                      "expected_cost_usd": cost, "rebids": 0, "rebid_at": None, "paused_at": None}
            plan.actions.append(Transition(job.id, S.PLACING, p.reason or "placed", job.epoch, fields))
            plan.actions.append(Create(job.id, job.epoch + 1, p.offer_id, p.bid, p.reason))

    # 5. Durable destroy obligations: drop the satisfied ones, re-drive the rest.
    for inst_id, why in snap.obligations.items():
        if all(i.id != inst_id for i in snap.instances):
            plan.actions.append(Forget(inst_id, "the listing shows it gone"))
        else:
            destroy(inst_id, why.get("job_id"), why.get("epoch"), str(why.get("reason", "obligation")))
    return plan


def rental_of(inst: Instance) -> Rental | None:
    """A listed instance of ours as the fleet guard sees it (None without a machine id)."""
    if inst.machine_id is None:
        return None
    status = (inst.actual_status or "").lower()
    return Rental(inst.id, inst.machine_id, max(inst.num_gpus, 1),
                  (inst.bid_price or inst.dph_total) if inst.is_bid else None,
                  status in ("running", "loading"), inst.gpu_ids)


def fleet_holdings(snap: Snapshot, ours: Sequence[tuple[Instance, str, int]],
                   by_label: Mapping[tuple[str, int], Sequence[Instance]]) -> Holdings:
    """Every listed rental of ours (whatever its phase, orphans too: they hold GPUs until destroyed) and the
    machines of attempts the listing does not show (a create in flight or just done: the jobs are read before
    the listing and the offers after it, so a rental made in between is seen here or in the offers' prices)."""
    rentals = [r for inst, _, _ in ours if inst.id not in snap.destroying and (r := rental_of(inst)) is not None]
    in_flight = frozenset(j.machine_id for j in snap.jobs.values()
                          if j is not None and j.machine_id is not None
                          and (j.state == S.PLACING or j.state in ATTEMPT_STATES)
                          and not by_label.get((j.id, j.epoch)))
    return Holdings(tuple(rentals), in_flight)


def _attempt(plan: Plan, job: Job, inst: Instance | None, obs: Observation, verdict: Verdict,
             params: PlanParams, on_outbid: Any, holdings: Holdings, now: float) -> None:
    """What to do about the job's live attempt, given its verdict."""
    if verdict.health == Health.healthy:
        if job.state == S.BOOTING and obs.current_beat is not None:
            plan.actions.append(Transition(job.id, S.RUNNING, "first heartbeat", job.epoch))
        elif job.state == S.PAUSED:
            plan.actions.append(Transition(job.id, S.RUNNING, verdict.reason, job.epoch))
        return
    if verdict.health != Health.interrupted:
        return
    why = verdict.reason
    if verdict.cause in (Cause.outbid, Cause.paused) and inst is not None:
        choice = on_outbid(job, inst, obs.silent_for, params, holdings)
        if job.state == S.RUNNING:  # the state says what is known from the first pass that sees it
            plan.actions.append(Transition(job.id, S.PAUSED, _paused_reason(verdict, obs, choice), job.epoch,
                                           {"paused_at": now}))
        if choice.action == "wait":
            return
        if choice.action == "raise" and choice.price is not None:
            ceiling = job.offer_dph if job.offer_dph is not None else float("inf")
            plan.actions.append(RaiseBid(job.id, inst.id, choice.price, choice.reason, ceiling=ceiling,
                                         fields={"rebids": job.rebids + 1, "rebid_at": now}))
            return
        why = f"{why}; {choice.reason}" if choice.reason else why
    preemptions = job.preemptions + 1
    plan.actions.append(Transition(job.id, S.INTERRUPTED, f"{verdict.cause.value if verdict.cause else 'lost'}:"
                                   f" {why}", job.epoch, {"preemptions": preemptions}))
    _requeue(plan, job, preemptions, params, progressed=_progressed(job, job.state in (S.RUNNING, S.PAUSED)),
             last=f"{verdict.cause.value if verdict.cause else 'lost'}: {why}")


def _paused_reason(verdict: Verdict, obs: Observation, choice: Any) -> str:
    by = "a rival bid" if verdict.cause == Cause.outbid else "the marketplace"
    doing = {"wait": "waiting for the auction", "raise": f"re-bid at ${choice.price or 0:.4f}/h",
             "requeue": "moving to a new offer"}.get(choice.action, choice.action)
    return f"paused by {by} {obs.silent_for:.0f}s ago; {doing}: {choice.reason}"


def _progressed(job: Job, ran: bool) -> bool:
    """Did the attempt that just ended move the job forward? A checkpoint committed in it; for a job that
    keeps none, reaching RUNNING."""
    ckpt = job.latest_checkpoint
    if ckpt is not None and ckpt.epoch == job.epoch:
        return True
    return ran and not job.spec.checkpoint.required


def _requeue(plan: Plan, job: Job, preemptions: int, params: PlanParams, *, progressed: bool, last: str) -> None:
    fruitless = 0 if progressed else job.fruitless + 1
    if preemptions > job.spec.max_preemptions:
        plan.actions.append(Transition(job.id, S.FAILED, f"{preemptions} interruptions, past the cap of"
                                       f" {job.spec.max_preemptions}", job.epoch))
    elif fruitless > params.max_fruitless:
        plan.actions.append(Transition(job.id, S.FAILED, f"{fruitless} attempts in a row ended without progress"
                                       f" (no checkpoint committed), past the cap of {params.max_fruitless};"
                                       f" last: {last}", job.epoch, {"fruitless": fruitless}))
    else:
        ckpt = job.latest_checkpoint
        where = f"checkpoint step {ckpt.step} (epoch {ckpt.epoch})" if ckpt is not None else "the start"
        plan.actions.append(Transition(job.id, S.PENDING, f"re-queued from {where}", job.epoch,
                                       {"fruitless": fruitless}))
