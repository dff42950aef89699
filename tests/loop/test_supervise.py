"""The supervision rule table, case by case: (job, instance row, heartbeat, now) -> verdict and rule."""

from __future__ import annotations

import pytest

from tests.loop.factories import NOW, make_beat, make_instance, make_job
from vastfleet.scheduler.supervise import Cause, Health, Observation, Timings, supervise
from vastfleet.spec.job import JobState

T = Timings(heartbeat_lost_s=5, boot_timeout_s=30, scheduling_timeout_s=20, gone_grace_s=3)
S = JobState


def verdict(job, inst, beat, label_epoch=None, now=NOW):
    epoch = label_epoch if label_epoch is not None else (job.epoch if job is not None and inst is not None else None)
    return supervise(Observation(job, inst, epoch, beat, now, T))


CASES = [
    # name, job, instance, beat, label epoch, expected health, cause, rule
    ("fresh beat, running", make_job(), make_instance(), make_beat(), None, Health.healthy, None, "healthy"),
    ("unknown job", None, make_instance(), None, 1, Health.orphan, None, "unknown-job"),
    ("older epoch label", make_job(epoch=2), make_instance(epoch=1), make_beat(epoch=2), 1, Health.orphan, None,
     "stale-epoch"),
    ("second instance of one attempt", make_job(instance_id=100), make_instance(instance_id=101), make_beat(), None,
     Health.orphan, None, "duplicate"),
    ("job succeeded", make_job(state=S.SUCCEEDED), make_instance(), make_beat(), None, Health.dead, None,
     "job-over"),
    ("job cancelled", make_job(state=S.CANCELLED), make_instance(), None, None, Health.dead, None, "job-over"),
    ("job re-queued, old instance left", make_job(state=S.PENDING), make_instance(), None, None, Health.orphan,
     None, "attempt-abandoned"),
    ("placing", make_job(state=S.PLACING, instance_id=None), None, None, None, Health.booting, None, "placing"),
    ("absent from listing, fresh beat", make_job(), None, make_beat(), None, Health.healthy, None,
     "listing-lags"),
    ("absent from listing, just recorded", make_job(state=S.BOOTING, updated_at=NOW - 1), None, None, None,
     Health.booting, None, "not-yet-listed"),
    ("absent from listing, silent", make_job(), None, make_beat(at=NOW - 60), None, Health.interrupted, Cause.gone,
     "gone"),
    ("offline and silent", make_job(), make_instance(status="offline"), make_beat(at=NOW - 10), None,
     Health.interrupted, Cause.host_offline, "host-offline"),
    ("offline but beating: the status lies", make_job(), make_instance(status="offline"), make_beat(), None,
     Health.healthy, None, "healthy"),
    ("exited and silent", make_job(), make_instance(status="exited"), make_beat(at=NOW - 10), None,
     Health.interrupted, Cause.exited, "exited"),
    ("outbid (stopped bid) and silent", make_job(), make_instance(status="stopped", is_bid=True),
     make_beat(at=NOW - 8), None, Health.interrupted, Cause.outbid, "paused"),
    ("stopped but beating: the status lies", make_job(), make_instance(status="stopped", is_bid=True), make_beat(),
     None, Health.healthy, None, "healthy"),
    ("scheduling too long", make_job(), make_instance(status="scheduling", is_bid=True), make_beat(at=NOW - 25),
     None, Health.interrupted, Cause.stuck_scheduling, "paused"),
    ("stopped non-bid", make_job(), make_instance(status="stopped"), make_beat(at=NOW - 8), None,
     Health.interrupted, Cause.paused, "paused"),
    ("booting, scheduling a moment", make_job(state=S.BOOTING, updated_at=NOW - 2),
     make_instance(status="stopped", is_bid=True), None, None, Health.booting, None, "booting"),
    ("booting, scheduling past the bound", make_job(state=S.BOOTING, updated_at=NOW - 25),
     make_instance(status="stopped", is_bid=True), None, None, Health.interrupted, Cause.stuck_scheduling, "paused"),
    ("booting, created stopped (bid below min_bid)", make_job(state=S.BOOTING, updated_at=NOW - 1),
     make_instance(status="stopped", is_bid=True, intended_status="stopped"), None, None, Health.interrupted,
     Cause.stuck_scheduling, "paused"),
    ("loading inside the bound", make_job(state=S.BOOTING, updated_at=NOW - 10), make_instance(status="loading"),
     None, None, Health.booting, None, "booting"),
    ("loading past the bound", make_job(state=S.BOOTING, updated_at=NOW - 40), make_instance(status="loading"),
     None, None, Health.interrupted, Cause.boot_timeout, "boot-timeout"),
    ("a stale epoch's beat does not count", make_job(state=S.BOOTING, epoch=2, updated_at=NOW - 40),
     make_instance(epoch=2, status="running"), make_beat(epoch=1), None, Health.interrupted, Cause.boot_timeout,
     "boot-timeout"),
    ("running, heartbeat lost", make_job(), make_instance(), make_beat(at=NOW - 6), None, Health.interrupted,
     Cause.heartbeat_lost, "heartbeat-lost"),
    ("running, never heard, since long", make_job(updated_at=NOW - 60), make_instance(), None, None,
     Health.interrupted, Cause.heartbeat_lost, "heartbeat-lost"),
]


@pytest.mark.parametrize("name,job,inst,beat,label_epoch,health,cause,rule", CASES, ids=[c[0] for c in CASES])
def test_rule_table(name, job, inst, beat, label_epoch, health, cause, rule) -> None:
    v = verdict(job, inst, beat, label_epoch)
    assert (v.health, v.cause, v.rule) == (health, cause, rule), v.reason


def test_no_single_status_field_decides_alone() -> None:
    """Every loss status, with a fresh heartbeat, is not a loss; with a stale one it is."""
    for status in ("offline", "exited", "stopped", "scheduling", "unknown"):
        inst = make_instance(status=status, is_bid=True)
        assert verdict(make_job(), inst, make_beat()).health == Health.healthy, status
        assert verdict(make_job(), inst, make_beat(at=NOW - 10)).health == Health.interrupted, status
