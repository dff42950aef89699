"""decide(snapshot, now) cases: objects observed -> actions expected (sample-controller style)."""

from __future__ import annotations

from tests.loop.factories import NOW, make_beat, make_ckpt, make_instance, make_job, make_offer, make_spec
from vastfleet.scheduler.placement import SimplePlacer
from vastfleet.scheduler.plan import (
    Create,
    Destroy,
    Forget,
    PlanParams,
    PolicyRequest,
    RaiseBid,
    Snapshot,
    Transition,
    decide,
)
from vastfleet.scheduler.policy.step import ChangeBid
from vastfleet.scheduler.supervise import Timings
from vastfleet.spec.job import JobState

S = JobState
P = PlanParams(timings=Timings(heartbeat_lost_s=5, boot_timeout_s=30, scheduling_timeout_s=20, gone_grace_s=3),
               outbid_wait_s=4)


def plan_for(*, jobs=(), instances=(), beats=None, offers=None, **kw):
    snap = Snapshot(jobs={j.id: j for j in jobs}, instances=list(instances), beats=beats or {}, offers=offers or {},
                    **kw)
    return decide(snap, NOW, P)


def test_settled_world_yields_an_empty_plan() -> None:
    plan = plan_for(jobs=[make_job()], instances=[make_instance()], beats={"j-aaaa": make_beat()})
    assert plan.actions == []


def test_pending_job_is_placed_on_the_cheapest_feasible_offer_through_the_state_machine() -> None:
    job = make_job(state=S.PENDING, instance_id=None, epoch=0)
    offers = {job.id: [make_offer(1, dph_total=0.9), make_offer(2, dph_total=0.4),
                       make_offer(3, gpu_name="RTX 3090", dph_total=0.1), make_offer(4, dph_total=0.2, reliability=0.5)]}
    plan = plan_for(jobs=[job], offers=offers)
    first = plan.actions[0]
    assert (first.job_id, first.to, first.expected_epoch) == (job.id, S.PLACING, 0)
    assert {k: first.fields[k] for k in ("offer_id", "bid", "instance_id", "offer_dph")} == {
        "offer_id": 2, "bid": None, "instance_id": None, "offer_dph": 0.4}
    assert plan.actions[1] == Create(job.id, 1, 2, None, plan.actions[1].reason)


def test_interruptible_job_bids_over_min_bid() -> None:
    job = make_job(state=S.PENDING, instance_id=None, epoch=0, spec=make_spec(interruptible="always"))
    plan = plan_for(jobs=[job], offers={job.id: [make_offer(1, dph_total=0.5), make_offer(2, is_bid=True,
                                                                                          min_bid=0.2)]})
    create = plan.of(Create)[0]
    assert create.offer_id == 2 and create.bid is not None and create.bid > 0.2


def test_two_pending_jobs_do_not_take_the_same_offer() -> None:
    a = make_job("j-aaaa", state=S.PENDING, instance_id=None, epoch=0)
    b = make_job("j-bbbb", state=S.PENDING, instance_id=None, epoch=0)
    offers = [make_offer(1, dph_total=0.3), make_offer(2, dph_total=0.4)]
    plan = plan_for(jobs=[a, b], offers={a.id: offers, b.id: offers})
    assert sorted(c.offer_id for c in plan.of(Create)) == [1, 2]


def test_preempted_job_is_interrupted_and_requeued_then_its_instance_destroyed_next_pass() -> None:
    job = make_job(preemptions=1, latest_checkpoint=make_ckpt(step=40))
    inst = make_instance(status="offline")
    first = plan_for(jobs=[job], instances=[inst], beats={job.id: make_beat(at=NOW - 10)})
    kinds = [(type(a).__name__, getattr(a, "to", None)) for a in first.actions]
    assert kinds == [("Transition", S.INTERRUPTED), ("Transition", S.PENDING)]
    assert first.actions[0].fields["preemptions"] == 2 and first.actions[0].fields["interrupted_at"] == [NOW]
    assert "step 40" in first.actions[1].reason
    assert not first.of(Destroy), "the destroy waits for the recovery decision to be recorded"
    requeued = job.model_copy(update={"state": S.PENDING})
    second = plan_for(jobs=[requeued], instances=[inst])
    assert [d.instance_id for d in second.of(Destroy)] == [inst.id]


def test_preemption_cap_fails_the_job() -> None:
    job = make_job(preemptions=20)
    plan = plan_for(jobs=[job], instances=[make_instance(status="exited")], beats={job.id: make_beat(at=NOW - 10)})
    assert [a.to for a in plan.of(Transition)] == [S.INTERRUPTED, S.FAILED]


def test_outbid_instance_is_waited_for_then_requeued() -> None:
    job = make_job()
    inst = make_instance(status="stopped", is_bid=True)
    waiting = plan_for(jobs=[job], instances=[inst], beats={job.id: make_beat(at=NOW - 3.5 - 2)})
    # heartbeat 5.5 s old: not fresh (5 s), paused 5.5 s > outbid_wait 4 s -> requeue
    assert [a.to for a in waiting.of(Transition)] == [S.PAUSED, S.INTERRUPTED, S.PENDING]
    fresh_pause = plan_for(jobs=[job.model_copy(update={"updated_at": NOW - 2})], instances=[inst], beats={})
    assert [(a.to, a.fields) for a in fresh_pause.actions] == [(S.PAUSED, {"paused_at": NOW})], \
        "paused 2 s: the job reads PAUSED while it waits for the auction"
    assert "for the auction" in fresh_pause.actions[0].reason
    still = plan_for(jobs=[job.model_copy(update={"updated_at": NOW - 2, "state": S.PAUSED})], instances=[inst],
                     beats={})
    assert still.actions == [], "already PAUSED: nothing new to write while it waits"


def test_outbid_policy_may_raise_the_bid() -> None:
    job = make_job()
    inst = make_instance(status="stopped", is_bid=True)
    snap = Snapshot(jobs={job.id: job}, instances=[inst], beats={job.id: make_beat(at=NOW - 6)})
    class Raising(SimplePlacer):
        def decide(self, request: PolicyRequest) -> list:  # type: ignore[override]
            return [ChangeBid(j.id, 0.6, True, "cheaper than moving") for j, _ in request.paused]

    plan = decide(snap, NOW, P, Raising())
    assert [a.to for a in plan.of(Transition)] == [S.PAUSED]
    assert plan.of(RaiseBid) == [RaiseBid(job.id, inst.id, 0.6, "cheaper than moving", ceiling=float("inf"),
                                          fields={"rebids": 1, "rebid_at": NOW})]


def test_booting_job_becomes_running_on_its_first_heartbeat() -> None:
    job = make_job(state=S.BOOTING)
    plan = plan_for(jobs=[job], instances=[make_instance()], beats={job.id: make_beat()})
    assert plan.actions == [Transition(job.id, S.RUNNING, "first heartbeat", 1)]


def test_placing_job_adopts_the_instance_carrying_its_label() -> None:
    job = make_job(state=S.PLACING, instance_id=None, offer_id=7)
    plan = plan_for(jobs=[job], instances=[make_instance(101), make_instance(100)])
    assert plan.actions[0] == Transition(job.id, S.BOOTING, plan.actions[0].reason, 1, {"instance_id": 100})
    assert [d.instance_id for d in plan.of(Destroy)] == [101]
    assert not plan.of(Create)


def test_placing_job_without_instance_drives_the_create_again_unless_in_flight() -> None:
    job = make_job(state=S.PLACING, instance_id=None, offer_id=7, bid=0.3)
    assert plan_for(jobs=[job]).actions == [Create(job.id, 1, 7, 0.3, "create not in flight")]
    assert plan_for(jobs=[job], creating=frozenset({(job.id, 1)})).actions == []


def test_unlabelled_instances_are_never_touched() -> None:
    plan = plan_for(instances=[make_instance(5, label=None), make_instance(6, label="someone-else")])
    assert plan.actions == []


def test_obligations_are_redriven_until_the_listing_shows_them_gone() -> None:
    obligations = {100: {"job_id": "j-aaaa", "epoch": 1, "reason": "orphan"}, 200: {"reason": "orphan"}}
    plan = plan_for(instances=[make_instance(100, label=None)], obligations=obligations)
    assert plan.of(Destroy) == [Destroy(100, "j-aaaa", 1, "orphan")]
    assert plan.of(Forget) == [Forget(200, "the listing shows it gone")]
    inflight = plan_for(instances=[make_instance(100, label=None)], obligations=obligations,
                        destroying=frozenset({100}))
    assert not inflight.of(Destroy)


def test_interrupted_left_behind_by_a_crash_is_requeued() -> None:
    job = make_job(state=S.INTERRUPTED, instance_id=100, preemptions=1)
    plan = plan_for(jobs=[job])
    assert [a.to for a in plan.of(Transition)] == [S.PENDING]


def test_a_move_waits_while_the_agent_reports_a_newer_checkpoint_than_the_committed_one() -> None:
    """Found by bench/chaos.py: a move asked for a checkpoint, an older one in flight was committed since the
    request, and the attempt was ended and destroyed while the agent still reported the requested (newer) one
    pending: its disk went with it. The move now waits for that one (within its bound)."""
    from vastfleet.scheduler.supervise import PendingCheckpoint

    ckpt = make_ckpt(step=30, epoch=1).model_copy(update={"committed_at": NOW - 2})
    job = make_job(moving_since=NOW - 5, moving="moved (cheaper): test", latest_checkpoint=ckpt)
    waiting = make_beat(pending_uploads=1, pending=PendingCheckpoint(31, "step-00000031", "a" * 12, 1, 10))
    plan = plan_for(jobs=[job], instances=[make_instance()], beats={job.id: waiting})
    assert not [a for a in plan.of(Transition) if a.to == S.INTERRUPTED], plan.actions
    done = plan_for(jobs=[job], instances=[make_instance()], beats={job.id: make_beat(pending_uploads=0)})
    assert [a.reason for a in done.of(Transition) if a.to == S.INTERRUPTED] == ["moved: moved (cheaper): test"]
