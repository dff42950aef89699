"""The teardown rule: never destroy before the job's checkpoint is verified off-box, unless none or forced."""

from __future__ import annotations

from tests.loop.factories import NOW, make_beat, make_instance, make_job, make_spec
from vastfleet.scheduler.plan import Destroy, PlanParams, Snapshot, decide
from vastfleet.scheduler.supervise import Health, Timings, Verdict
from vastfleet.scheduler.teardown import may_destroy
from vastfleet.spec.job import JobState

S = JobState
T = Timings(heartbeat_lost_s=5)
DEAD = Verdict(Health.dead, "the job is over")


def test_cancelled_job_with_uploads_pending_is_not_destroyed() -> None:
    job = make_job(state=S.CANCELLED)
    gate = may_destroy(DEAD, job, make_beat(pending_uploads=2), NOW, T)
    assert not gate.allowed and "un-uploaded" in gate.reason
    plan = decide(Snapshot(jobs={job.id: job}, instances=[make_instance()],
                           beats={job.id: make_beat(pending_uploads=2)}), NOW, PlanParams(timings=T))
    assert not plan.of(Destroy) and 100 in plan.waiting


def test_unknown_pending_state_with_a_live_agent_waits() -> None:
    job = make_job(state=S.CANCELLED)
    assert not may_destroy(DEAD, job, make_beat(pending_uploads=None), NOW, T).allowed


def test_destroy_once_the_agent_has_nothing_left_or_is_silent() -> None:
    job = make_job(state=S.CANCELLED)
    assert may_destroy(DEAD, job, make_beat(pending_uploads=0), NOW, T).allowed
    assert may_destroy(DEAD, job, make_beat(at=NOW - 6, pending_uploads=3), NOW, T).allowed
    assert may_destroy(DEAD, job, None, NOW, T).allowed


def test_force_or_no_checkpoints_skip_the_wait() -> None:
    beat = make_beat(pending_uploads=2)
    assert may_destroy(DEAD, make_job(state=S.CANCELLED, force=True), beat, NOW, T).allowed
    no_ckpt = make_job(state=S.CANCELLED, spec=make_spec(checkpoint={"required": False}))
    assert may_destroy(DEAD, no_ckpt, beat, NOW, T).allowed


def test_exit_report_means_the_final_upload_is_done() -> None:
    job = make_job(state=S.SUCCEEDED, exit_code=0)
    assert may_destroy(DEAD, job, make_beat(pending_uploads=1), NOW, T).allowed


def test_live_attempts_are_never_destroyed_by_teardown() -> None:
    for health in (Health.healthy, Health.booting, Health.interrupted):
        assert not may_destroy(Verdict(health, "x"), make_job(), make_beat(), NOW, T).allowed


def test_a_running_job_with_pending_uploads_never_sees_a_destroy() -> None:
    job = make_job()
    plan = decide(Snapshot(jobs={job.id: job}, instances=[make_instance()],
                           beats={job.id: make_beat(pending_uploads=3)}), NOW, PlanParams(timings=T))
    assert plan.actions == []
