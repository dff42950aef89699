"""Reconcile invariants over random observed worlds (hypothesis): whatever the marketplace and the agents
say, decide() never destroys a live attempt, never touches an unlabelled instance, never plans two creates
for one job, and only plans transitions the state machine allows."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.loop.factories import NOW, make_beat, make_instance, make_job, make_offer
from vastfleet.queue.machine import ALLOWED
from vastfleet.scheduler.labels import parse_label
from vastfleet.scheduler.plan import Create, Destroy, PlanParams, RaiseBid, Snapshot, Transition, decide
from vastfleet.scheduler.supervise import Timings
from vastfleet.spec.job import JobState

P = PlanParams(timings=Timings(heartbeat_lost_s=5, boot_timeout_s=30, scheduling_timeout_s=20, gone_grace_s=3),
               outbid_wait_s=4)
STATUSES = ["running", "loading", "stopped", "scheduling", "offline", "exited", "unknown", "created", None]


@st.composite
def worlds(draw):
    jobs, instances, beats = {}, [], {}
    next_iid = 100
    for n in range(draw(st.integers(1, 4))):
        job_id = f"j-job{n}"
        state = draw(st.sampled_from(list(JobState)))
        epoch = draw(st.integers(0 if state == JobState.PENDING else 1, 4))
        has_inst = state not in (JobState.PENDING,) and draw(st.booleans())
        iid = next_iid if has_inst else None
        next_iid += 1
        jobs[job_id] = make_job(job_id, state=state, epoch=epoch,
                                instance_id=iid if state != JobState.PLACING else None,
                                updated_at=NOW - draw(st.floats(0, 100)), preemptions=draw(st.integers(0, 25)),
                                offer_id=draw(st.sampled_from([None, 1])), exit_code=draw(st.sampled_from([None, 0])))
        if has_inst:
            label_epoch = draw(st.sampled_from([epoch, max(0, epoch - 1)]))
            instances.append(make_instance(iid, job_id, label_epoch, status=draw(st.sampled_from(STATUSES)),
                                           is_bid=draw(st.booleans())))
        if draw(st.booleans()):
            beats[job_id] = make_beat(at=NOW - draw(st.floats(0, 60)), epoch=draw(st.sampled_from([epoch, epoch - 1])),
                                      pending_uploads=draw(st.sampled_from([None, 0, 2])))
    for k in range(draw(st.integers(0, 2))):  # someone else's instances, unlabelled or foreign
        instances.append(make_instance(900 + k, label=draw(st.sampled_from([None, "", "other:x:1", "mine"]))))
    offers = {j: [make_offer(1), make_offer(2)] for j, job in jobs.items() if job.state == JobState.PENDING}
    return Snapshot(jobs=jobs, instances=instances, beats=beats, offers=offers)


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_reconcile_invariants(snap: Snapshot) -> None:
    plan = decide(snap, NOW, P)
    ours = {i.id: parse_label(i.label) for i in snap.instances}
    for action in plan.actions:
        if isinstance(action, (Destroy, RaiseBid)):
            assert ours.get(action.instance_id) is not None, "never touch an instance that is not provably ours"
        if isinstance(action, Destroy) and action.job_id in snap.jobs:
            job = snap.jobs[action.job_id]
            live = job.state in (JobState.BOOTING, JobState.RUNNING) and job.instance_id == action.instance_id \
                and ours[action.instance_id] == (job.id, job.epoch)
            assert not live, f"destroyed the live attempt of {job.state.value} job: {action.reason}"
    creates = [a.job_id for a in plan.of(Create)]
    assert len(creates) == len(set(creates)), "two creates for one job in one pass"
    state = {j: job.state for j, job in snap.jobs.items()}
    for t in plan.of(Transition):
        assert t.to in ALLOWED[state[t.job_id]], f"{state[t.job_id].value} -> {t.to.value} is not allowed"
        assert t.expected_epoch == snap.jobs[t.job_id].epoch, "every transition is fenced by the observed epoch"
        state[t.job_id] = t.to
