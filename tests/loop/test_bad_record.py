"""Issue 11: one job record that no longer decodes never stops a scheduler pass. The store's reads
quarantine it, so the observation and the placement go on with every other job (real Redis, the loop's
in-memory marketplace)."""

from __future__ import annotations

import json

import redis

from tests.helpers import FakeClock
from tests.loop.factories import make_offer, make_spec
from tests.loop.test_loop import beat, build
from tests.market_doubles import RecordingMarketplace
from vastfleet.spec.job import JobState

S = JobState


def corrupt(redis_client: redis.Redis, job_id: str) -> None:
    key = f"vf:job:{job_id}"
    spec = json.loads(redis_client.hget(key, "spec"))
    spec["checkpoint"]["interval"] = None  # what a NaN interval became when it was stored
    redis_client.hset(key, "spec", json.dumps(spec))


def test_a_bad_pending_record_does_not_stop_the_placement_of_the_others(redis_client: redis.Redis) -> None:
    """Before: observe() raised pydantic's ValidationError on the bad record, so no job was placed."""
    market, clock = RecordingMarketplace([make_offer(1, dph_total=0.4), make_offer(2, dph_total=0.3)]), \
        FakeClock(1_000_000.0)
    store, loop = build(redis_client, market, clock)
    bad = store.submit(make_spec(interruptible="never", priority=5)).id  # first in the queue
    good = store.submit(make_spec(interruptible="never")).id
    corrupt(redis_client, bad)
    snap = loop.observe(market)
    assert snap is not None and set(snap.jobs) == {good}
    result = loop.run_pass()
    assert result.observed and result.error is None
    assert store.get(good).state == S.BOOTING
    [entry] = store.quarantine.list()
    assert entry.id == bad and "checkpoint.interval" in entry.reason
    assert [e[1]["kind"] for e in redis_client.xrange(f"vf:events:{bad}")] == ["submitted", "quarantined"]


def test_a_running_job_whose_record_goes_bad_is_set_aside_and_the_pass_goes_on(redis_client: redis.Redis) -> None:
    """Its instance's label now names a job the store cannot give: the pass goes on, and the instance is kept
    (nothing says its checkpoints are off the box) until the quarantine's bound, then destroyed."""
    market, clock = RecordingMarketplace([make_offer(1, dph_total=0.4), make_offer(2, dph_total=0.3)]), \
        FakeClock(1_000_000.0)
    store, loop = build(redis_client, market, clock)
    running = store.submit(make_spec(interruptible="never")).id
    loop.run_pass()
    job = store.get(running)
    market.set_status(job.instance_id, "running")
    beat(redis_client, job, clock.now)
    loop.run_pass()
    assert store.get(running).state == S.RUNNING
    corrupt(redis_client, running)
    waiting = store.submit(make_spec(interruptible="never")).id
    clock.now += 1
    result = loop.run_pass()
    assert result.observed and result.error is None
    assert store.quarantine.reason(running) is not None
    assert store.get(waiting).state == S.BOOTING
    for _ in range(3):  # and it stays that way, pass after pass
        clock.now += 1
        assert loop.run_pass().error is None
    assert "destroy_instance" not in market.methods_called(), "kept for the operator to release the job"
    clock.now += 6 * 3600
    assert loop.run_pass().error is None
    assert ("destroy_instance", (job.instance_id,)) in market.calls, "never billing forever"
