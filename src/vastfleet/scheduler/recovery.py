"""What a pass does with each live attempt, given its verdict, and with the policy's decisions about it.

  healthy       BOOTING -> RUNNING on its first beat; PAUSED -> RUNNING when it resumed; a healthy RUNNING
                attempt is offered to the policy (it may lower the bid, or move the attempt), and one the
                policy moves finishes its move once the checkpoint asked for is committed
  paused        RUNNING -> PAUSED at the first pass that sees it (the reason says what is being decided); the
                auction gets `outbid_wait_s` since the last beat; an attempt whose GPU another rental of ours
                holds, or whose bid was raised `max_rebids` times, moves; a raise waits twice as long as the
                last; else the policy decides: raise in place, or move
  lost          -> INTERRUPTED (preemptions + 1, a typed cause) -> PENDING from the last committed
                checkpoint, or FAILED past `max_preemptions` or past `max_fruitless` attempts in a row
                without progress; with salvage on and a checkpoint written but never uploaded, INTERRUPTED
                waits for the salvage first
Pure: plan actions out, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from vastfleet.scheduler.fleetstate import rental_of
from vastfleet.scheduler.plan_types import (
    Plan,
    PlanParams,
    PolicyRequest,
    RaiseBid,
    Salvage,
    StartMove,
    Transition,
)
from vastfleet.scheduler.policy.fleet import Holdings
from vastfleet.scheduler.policy.step import ChangeBid, Decision, Move, Place
from vastfleet.scheduler.supervise import Cause, Health, Observation, Verdict
from vastfleet.spec.job import Job, JobState
from vastfleet.spec.market import Instance

S = JobState
MAX_INTERRUPTIONS_KEPT = 20


def attempt(plan: Plan, job: Job, inst: Instance | None, obs: Observation, verdict: Verdict, params: PlanParams,
            holdings: Holdings, now: float, request: PolicyRequest) -> None:
    """What to do about the job's live attempt, given its verdict."""
    if verdict.health == Health.healthy:
        if job.state == S.BOOTING and obs.current_beat is not None:
            plan.actions.append(Transition(job.id, S.RUNNING, "first heartbeat", job.epoch))
        elif job.state == S.PAUSED:
            plan.actions.append(Transition(job.id, S.RUNNING, verdict.reason, job.epoch))
        elif job.state == S.RUNNING and inst is not None:
            if job.moving_since is not None:
                _finish_move(plan, job, obs, params, now)
            else:
                request.running.append((job, inst))
        return
    if verdict.health != Health.interrupted:
        return
    if verdict.cause in (Cause.outbid, Cause.paused) and inst is not None:
        _paused(plan, job, inst, obs, verdict, params, holdings, now, request)
        return
    lose(plan, job, inst, obs, verdict.cause, verdict.reason, params, now)


def _paused(plan: Plan, job: Job, inst: Instance, obs: Observation, verdict: Verdict, params: PlanParams,
            holdings: Holdings, now: float, request: PolicyRequest) -> None:
    by = "a rival bid" if verdict.cause == Cause.outbid else "the marketplace"
    wait: str | None = None
    move: str | None = None
    mine = rental_of(inst)
    if obs.silent_for < params.outbid_wait_s:
        wait = f"waiting up to {params.outbid_wait_s:.0f}s for the auction"
    elif mine is not None and holdings.holds_our_gpu(mine, inst.min_bid):
        move = "another job of ours holds its GPU: moving, not outbidding it"
    elif job.rebids >= params.max_rebids:
        move = f"its bid was raised {job.rebids} times already: moving"
    elif job.rebid_at is not None and now - job.rebid_at < params.outbid_wait_s * 2.0 ** job.rebids:
        wait = f"the bid was raised {now - job.rebid_at:.0f}s ago: waiting before raising again"
    if job.state == S.RUNNING:  # the state says what is known from the first pass that sees it
        doing = wait or move or "deciding: raise the bid in place or move"
        plan.actions.append(Transition(job.id, S.PAUSED, f"paused by {by} {obs.silent_for:.0f}s ago; {doing}",
                                       job.epoch, {"paused_at": now}))
    if wait is not None:
        return
    if move is not None:
        lose(plan, job, inst, obs, verdict.cause, f"{verdict.reason}; {move}", params, now)
        return
    request.paused.append((job, inst))


def lose(plan: Plan, job: Job, inst: Instance | None, obs: Observation | None, cause: Cause | None, why: str,
         params: PlanParams, now: float) -> None:
    """The attempt is over: INTERRUPTED, then salvage, PENDING or FAILED."""
    moved = cause == Cause.moved
    preemptions = job.preemptions + (0 if moved else 1)
    fields: dict[str, object] = {"preemptions": preemptions, "moving_since": None}
    if not moved:
        fields["interrupted_at"] = [*job.interrupted_at[-(MAX_INTERRUPTIONS_KEPT - 1):], now]
    label = cause.value if cause is not None else "lost"
    plan.actions.append(Transition(job.id, S.INTERRUPTED, f"{label}: {why}", job.epoch, fields, cause=cause))
    beat = obs.current_beat if obs is not None else None
    pending = beat.pending if beat is not None else None
    committed = job.latest_checkpoint.step if job.latest_checkpoint and job.latest_checkpoint.step is not None \
        else -1
    if params.salvage and inst is not None and cause != Cause.gone and pending is not None \
            and pending.step > committed:  # its disk still holds work never uploaded: copy it off first
        plan.actions.append(Salvage(job.id, job.epoch, inst.id, pending,
                                    f"checkpoint step {pending.step} was written but never uploaded"))
        return
    requeue(plan, job, preemptions, params, progressed=progressed(job, job.state in (S.RUNNING, S.PAUSED)),
            last=f"{label}: {why}")


def progressed(job: Job, ran: bool) -> bool:
    """Did the attempt that just ended move the job forward? A checkpoint committed in it; for a job that
    keeps none, reaching RUNNING."""
    ckpt = job.latest_checkpoint
    if ckpt is not None and ckpt.epoch == job.epoch:
        return True
    return ran and not job.spec.checkpoint.required


def requeue(plan: Plan, job: Job, preemptions: int, params: PlanParams, *, progressed: bool, last: str,
            outcome: str = "") -> None:
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
        told = f"; {outcome}" if outcome else ""
        plan.actions.append(Transition(job.id, S.PENDING, f"re-queued from {where}{told}", job.epoch,
                                       {"fruitless": fruitless}))


def _finish_move(plan: Plan, job: Job, obs: Observation, params: PlanParams, now: float) -> None:
    """A move waits for the checkpoint it asked for (or its bound), then ends the attempt as MOVED. A commit
    since the request is not enough while the agent reports a newer one pending: that is the one it wrote for
    the request (the commit was an older one in flight), and the destroy would take it (found by chaos)."""
    assert job.moving_since is not None
    ckpt = job.latest_checkpoint
    beat = obs.current_beat
    newer = beat is not None and beat.pending is not None and ckpt is not None and ckpt.step is not None \
        and beat.pending.step > ckpt.step
    saved = ckpt is not None and ckpt.epoch == job.epoch and ckpt.committed_at >= job.moving_since and not newer
    if saved or not job.spec.checkpoint.required or now - job.moving_since > params.move_timeout_s:
        why = job.moving + ("" if saved or not job.spec.checkpoint.required else
                            f" (no checkpoint within {params.move_timeout_s:.0f}s: moved from the last one)")
        lose(plan, job, None, None, Cause.moved, why, params, now)


def apply_decisions(plan: Plan, decisions: list[Decision], jobs: Mapping[str, Job],
                    paused: Mapping[str, Instance], running: Mapping[str, Instance],
                    observed: Mapping[str, Observation], params: PlanParams, now: float) -> None:
    """The policy's decisions as the plan's actions (placements are `decide`'s: they create)."""
    for d in decisions:
        job = jobs.get(d.job_id)
        if job is None or isinstance(d, Place):
            continue
        inst = paused.get(d.job_id) or running.get(d.job_id)
        if isinstance(d, ChangeBid) and inst is not None:
            if d.restart:
                ceiling = job.offer_dph if job.offer_dph is not None else float("inf")
                plan.actions.append(RaiseBid(job.id, inst.id, d.bid, d.reason, ceiling=ceiling,
                                             fields={"rebids": job.rebids + 1, "rebid_at": now}))
            elif job.bid is not None and d.bid < job.bid:
                plan.actions.append(RaiseBid(job.id, inst.id, d.bid, d.reason, start=False, ceiling=job.bid))
        elif isinstance(d, Move) and d.job_id in paused:
            lose(plan, job, paused[d.job_id], observed.get(d.job_id),
                 Cause.outbid if paused[d.job_id].is_bid else Cause.paused, d.reason, params, now)
        elif isinstance(d, Move) and d.job_id in running:
            fields = {"moving_since": now, "moving": f"moved ({d.to}): {d.reason}", "pinned_on_demand": d.pin}
            plan.actions.append(StartMove(job.id, job.epoch, d.reason, fields))
