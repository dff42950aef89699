"""`decide(snapshot, now, params, placer) -> Plan`: the reconcile pass as a pure function of what was observed.

The snapshot holds both sides, re-read every pass (level-triggered): the jobs, one SUCCESSFUL marketplace
listing, the agents' heartbeats, the offers searched, the creates in flight, the durable destroy obligations,
the salvages, the fleet's spend and credit. The plan is a list of actions (`plan_types`) that one applier
executes in order:

    Transition   a job state change through the JobStore (epoch-fenced; a refused one stops that job's chain)
    Create       rent an offer for (job, epoch): idempotent by the label `vf:<job>:<epoch>`
    Adopt        (a Transition PLACING -> BOOTING naming an instance found by its label)
    Destroy      record a durable obligation and drive it until the listing shows the instance gone
    Forget       the listing shows an obligation's instance gone: drop the obligation
    RaiseBid     change the bid of a paused instance of ours and start it again (or lower a running one's)
    Salvage      copy a lost attempt's unsent checkpoint off its disk before the instance goes
    StartMove    the policy moves a running attempt: a checkpoint first, then the attempt ends as MOVED

The pass: supervise every instance of ours (`supervise`), act on each attempt's verdict (`recovery`), adopt
or re-drive creates, then ask the policy ONCE (`Placer.decide`: the same decision step the benchmark's replay
calls) about the jobs to place, the paused attempts and the running ones, and turn its decisions into
actions. A settled world (every attempt healthy, no pending job, no obligation) yields an empty plan, so a
second pass makes no marketplace call but the listing. Never does I/O; never reads a clock.
"""

from __future__ import annotations

import math

from vastfleet.scheduler.fleetstate import fleet_budget, fleet_holdings, rental_of
from vastfleet.scheduler.labels import parse_label
from vastfleet.scheduler.placement import SimplePlacer
from vastfleet.scheduler.plan_types import (
    Action,
    Create,
    Destroy,
    Forget,
    Placer,
    Plan,
    PlanParams,
    PolicyRequest,
    RaiseBid,
    Salvage,
    Snapshot,
    StartMove,
    Transition,
)
from vastfleet.scheduler.policy.step import Place
from vastfleet.scheduler.recovery import apply_decisions, attempt, progressed, requeue
from vastfleet.scheduler.supervise import Health, Observation, PendingCheckpoint, supervise
from vastfleet.scheduler.teardown import may_destroy
from vastfleet.spec.job import ATTEMPT_STATES, JobState
from vastfleet.spec.market import Instance

S = JobState

__all__ = ["Action", "Create", "Destroy", "Forget", "Plan", "PlanParams", "PolicyRequest", "RaiseBid", "Salvage",
           "Snapshot", "StartMove", "Transition", "decide", "fleet_budget", "rental_of"]


def decide(snap: Snapshot, now: float, params: PlanParams | None = None, placer: Placer | None = None,
           rebalance: bool = False) -> Plan:
    """`placer`: the policy (default: the cheapest-feasible stand-in); `rebalance`: running attempts may be
    moved this pass (the loop says so every `rebalance_every_s`)."""
    params = params if params is not None else PlanParams()
    placer = placer if placer is not None else SimplePlacer()
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
    request = PolicyRequest(now, snap.offers, holdings, fleet_budget(snap, params), rebalance=rebalance)
    observed: dict[str, Observation] = {}
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
            rec = snap.salvages.get(job_id)
            if job is not None and rec is not None and rec.status == "queued" and rec.instance_id == inst.id \
                    and rec.epoch == epoch == job.epoch:
                plan.waiting[inst.id] = f"salvaging checkpoint step {rec.step} off it first"
                continue
            gate = may_destroy(verdict, job, snap.beats.get(job_id), now, params.timings)
            if gate.allowed:
                destroy(inst.id, job_id, epoch, gate.reason)
            else:
                plan.waiting[inst.id] = gate.reason
            continue
        assert job is not None
        handled_jobs.add(job_id)
        observed[job_id] = obs
        attempt(plan, job, inst, obs, verdict, params, holdings, now, request)

    # 2. Attempts whose instance the listing does not show (BOOTING / RUNNING / PAUSED with an instance id).
    for job in snap.jobs.values():
        if job.id in handled_jobs or job.state not in ATTEMPT_STATES:
            continue
        obs = Observation(job, None, None, snap.beats.get(job.id), now, params.timings)
        verdict = supervise(obs)
        plan.verdicts[job.id] = verdict
        attempt(plan, job, None, obs, verdict, params, holdings, now, request)

    # 2b. INTERRUPTED: a salvage in progress, or left behind (a pass that died between its two transitions,
    # or the agent reported a host fault): finish the recovery.
    for job in snap.jobs.values():
        if job.state == S.INTERRUPTED:
            rec = snap.salvages.get(job.id)
            outcome = ""
            if rec is not None and rec.epoch == job.epoch:
                if rec.status == "queued" and now - rec.since <= params.salvage_timeout_s:
                    told = PendingCheckpoint(rec.step, rec.dir, rec.digest, rec.files, 0)
                    plan.actions.append(Salvage(job.id, job.epoch, rec.instance_id, told, "salvage again"))
                    continue  # the applier keeps one in flight
                outcome = rec.reason if rec.status != "queued" else \
                    f"salvage of checkpoint step {rec.step} given up after {params.salvage_timeout_s:.0f}s"
            requeue(plan, job, job.preemptions, params, progressed=progressed(job, False), last=job.reason,
                    outcome=outcome)

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

    # 4. The policy, once: placements of pending jobs, raise-or-move of paused attempts, running ones.
    request.pending = sorted((j for j in snap.jobs.values() if j.state == S.PENDING),
                             key=lambda j: (-j.spec.priority, j.submitted_at))
    if request.pending or request.paused or request.running:
        decisions = placer.decide(request)
        apply_decisions(plan, decisions, snap.jobs, {j.id: i for j, i in request.paused},
                        {j.id: i for j, i in request.running}, observed, params, now)
        pending = {j.id for j in request.pending}
        for p in decisions:
            if not isinstance(p, Place) or p.job_id not in pending:
                continue
            job = snap.jobs[p.job_id]
            cost = p.expected_cost if math.isfinite(p.expected_cost) else None
            offer = next((o for o in snap.offers.get(job.id, ()) if o.id == p.offer_id), None)
            fields = {"offer_id": p.offer_id, "bid": p.bid, "instance_id": None, "offer_dph": p.on_demand_price,
                      "machine_id": p.machine_id, "offer_cpus": offer.cpu_cores_effective if offer else None,
                      "expected_cost_usd": cost, "rebids": 0, "rebid_at": None, "paused_at": None,
                      "pinned_on_demand": p.pin or job.pinned_on_demand}
            plan.actions.append(Transition(job.id, S.PLACING, p.reason or "placed", job.epoch, fields))
            plan.actions.append(Create(job.id, job.epoch + 1, p.offer_id, p.bid, p.reason))

    # 5. Durable destroy obligations: drop the satisfied ones, re-drive the rest.
    for inst_id, why in snap.obligations.items():
        if all(i.id != inst_id for i in snap.instances):
            plan.actions.append(Forget(inst_id, "the listing shows it gone", why.get("job_id")))
        else:
            destroy(inst_id, why.get("job_id"), why.get("epoch"), str(why.get("reason", "obligation")))
    return plan
