"""Issue 5 in the live loop: the Young/Daly checkpoint cadence sent to the agent, and hosts that failed us
left out of placement for a while (Redis-kept, swept by time)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import redis

from tests.helpers import FakeClock
from tests.loop.factories import make_instance, make_job, make_offer, make_spec
from tests.loop.test_loop import beat, build
from tests.market_doubles import RecordingMarketplace
from vastfleet.scheduler.apply import Applied
from vastfleet.scheduler.exclusions import CheckpointCosts, FleetMemory, HostExclusions, JobHazards
from vastfleet.scheduler.loop import SchedulerLoop
from vastfleet.scheduler.plan import Snapshot, Transition
from vastfleet.scheduler.policy import rental_hazards
from vastfleet.scheduler.policy_adapter import DEFAULT_CHECKPOINT_COST_S, PolicyPlacer
from vastfleet.scheduler.supervise import Cause
from vastfleet.spec.job import CheckpointRef, JobState

S = JobState


# --- cadence ----------------------------------------------------------------------------------------------


def _placer_seeing(host: int, inst_id: int = 100) -> tuple[PolicyPlacer, Any]:
    placer = PolicyPlacer()
    inst = make_instance(inst_id, host_id=host, gpu_name="RTX 4090", reliability=0.99, is_bid=True)
    job = make_job(instance_id=inst_id, bid=0.3)
    placer.learn(Snapshot(jobs={job.id: job}, instances=[inst]), [], 0.0)
    return placer, job


def test_a_rising_hazard_shortens_the_checkpoint_interval() -> None:
    placer, job = _placer_seeing(host=7)
    placer.learn(Snapshot(jobs={}, instances=[]), [], 3600.0 * 10)  # ten quiet hours on host 7
    calm_hazard, calm = placer.hazard_per_hour(job), placer.checkpoint_interval(job, 120.0)
    snap = Snapshot(jobs={job.id: job}, instances=[make_instance(100, host_id=7, gpu_name="RTX 4090",
                                                                 reliability=0.99, is_bid=True)])
    for _ in range(5):
        placer.learn(snap, [(job.id, Cause.host_offline)], 3600.0 * 10)
    assert placer.hazard_per_hour(job) > calm_hazard
    stormy = placer.checkpoint_interval(job, 120.0)
    assert stormy < calm, (stormy, calm)
    assert placer.checkpoint_interval(job, 600.0) > stormy, "a dearer checkpoint is taken less often"


def test_a_numeric_interval_is_kept_and_auto_defaults_the_cost() -> None:
    placer, job = _placer_seeing(host=7)
    fixed = make_job(instance_id=100, spec=make_spec(checkpoint={"interval": 900}))
    assert placer.checkpoint_interval(fixed, 5.0) == 900.0
    assert placer.checkpoint_interval(job, None) == placer.checkpoint_interval(job, DEFAULT_CHECKPOINT_COST_S)
    unseen = make_job(instance_id=555)  # not listed yet: the GPU model's estimate, still a number in bounds
    assert 300.0 <= placer.checkpoint_interval(unseen, None) <= 4 * 3600.0


def test_the_interval_stays_within_its_bounds() -> None:
    placer, job = _placer_seeing(host=7)
    assert placer.checkpoint_interval(job, 0.0) == 300.0, "a free checkpoint is still not taken constantly"
    assert placer.checkpoint_interval(job, 1e7) == 4 * 3600.0, "a dear one is still taken"


def test_checkpoint_costs_time_first_presign_to_commit(redis_client: redis.Redis) -> None:
    clock = FakeClock(1_000_000.0)

    class Store:
        def presign_put(self, key: str) -> str:
            return f"http://127.0.0.1/{key}"

    costs = CheckpointCosts(redis_client, clock=clock)
    store = costs.watch(Store())
    job = make_job()
    assert costs.cost_s(job.id) is None
    prefix = f"jobs/{job.id}/epoch-1/10/"
    store.presign_put(prefix + "a")
    clock.now += 40
    store.presign_put(prefix + "b")
    costs.on_commit(job, CheckpointRef(epoch=1, step=10, prefix=prefix, files={}, committed_at=clock.now + 5))
    assert costs.cost_s(job.id) == 45.0
    assert CheckpointCosts(redis_client).cost_s(job.id) == 45.0, "kept in Redis, not in the process"


# --- exclusions -------------------------------------------------------------------------------------------


def test_job_hazards_are_replaced_whole_each_pass_and_expire(redis_client: redis.Redis) -> None:
    feed = JobHazards(redis_client, "t", ttl_s=0.2)
    feed.publish({"j-a": 0.05, "j-b": 0.2})
    assert feed.hazard("j-a") == 0.05 and feed.hazard("j-b") == 0.2 and feed.hazard("j-x") is None
    feed.publish({"j-b": 0.1})  # j-a ended: gone from the map, not left over
    assert feed.hazard("j-a") is None and feed.hazard("j-b") == 0.1
    assert 0 < redis_client.pttl("t:job_hazard") <= 200
    feed.publish({})
    assert redis_client.exists("t:job_hazard") == 0


def test_the_loop_publishes_the_hazard_of_each_live_attempt(redis_client: redis.Redis) -> None:
    market, clock = RecordingMarketplace([make_offer(1, dph_total=0.3)]), FakeClock(1_000_000.0)
    store, loop = build(redis_client, market, clock)
    loop.job_hazards = JobHazards(redis_client, loop.ctx.prefix)
    job = store.submit(make_spec(interruptible="never"))
    loop.run_pass()  # placed
    loop.run_pass()  # the next pass sees its instance
    placed = store.get(job.id)
    assert placed.instance_id is not None
    published = loop.job_hazards.hazard(job.id)
    assert published == pytest.approx(loop.placer.hazard_per_hour(placed), rel=1e-5)  # type: ignore[attr-defined]


def test_exclusions_expire_are_extended_and_survive_a_restart(redis_client: redis.Redis) -> None:
    ex = HostExclusions(redis_client, period_s=100.0)
    ex.exclude([1, 2], now=1000.0)
    ex.exclude([2], now=1050.0)
    again = HostExclusions(redis_client, period_s=100.0)  # a restarted scheduler
    assert again.live(1099.0) == {1, 2}
    assert again.live(1100.0) == {2}
    assert redis_client.zcard(again.key) == 1, "expired hosts are swept"
    ex.exclude([2], now=900.0)  # an older failure reported late does not shorten the period
    assert again.live(1149.0) == {2} and again.live(1150.0) == frozenset()


def _placed_host(market: RecordingMarketplace, job_id: str, store: Any) -> int | None:
    job = store.get(job_id)
    return market.instances[job.instance_id].host_id if job.instance_id in market.instances else None


def test_a_host_that_went_offline_is_skipped_for_the_period_then_chosen_again(redis_client: redis.Redis) -> None:
    market, clock = RecordingMarketplace([make_offer(1, dph_total=0.3), make_offer(2, dph_total=0.9)]), FakeClock(1_000_000.0)
    store, loop = build(redis_client, market, clock)
    loop.exclusions = HostExclusions(redis_client, loop.ctx.prefix, period_s=100.0, clock=clock)
    job = store.submit(make_spec(interruptible="never"))
    loop.run_pass()
    assert _placed_host(market, job.id, store) == 1, "the cheap host first"
    first = store.get(job.id).instance_id
    market.set_status(first, "running")
    beat(redis_client, store.get(job.id), clock.now)
    loop.run_pass()
    market.add_offer(make_offer(1, dph_total=0.3))  # host 1 lists again, still the cheapest
    market.set_status(first, "offline")
    clock.now += 10
    loop.run_pass()  # interrupted (host_offline) and re-queued
    assert store.get(job.id).state == S.PENDING
    assert loop.exclusions.live() == {1}
    loop.run_pass()
    assert store.get(job.id).state == S.BOOTING and _placed_host(market, job.id, store) == 2, \
        "host 1 failed us: the dearer host 2 is chosen"
    clock.now += 100  # the period is over
    other = store.submit(make_spec(interruptible="never"))
    loop.run_pass()
    assert loop.excluded == frozenset()
    assert _placed_host(market, other.id, store) == 1, "host 1 is chosen again after the period"


class Gauge:
    def __init__(self) -> None:
        self.excluded: list[int] = []

    def observe_pass(self, seconds: float) -> None: ...

    def fleet_snapshot(self, instances: Any, ages: Any) -> None: ...

    def set_hosts_excluded(self, count: int) -> None:
        self.excluded.append(count)


def test_outbid_does_not_exclude_a_host_and_the_count_reaches_metrics(redis_client: redis.Redis) -> None:
    market, clock = RecordingMarketplace([]), FakeClock(1_000_000.0)
    _, loop = build(redis_client, market, clock)
    loop.metrics = Gauge()
    jobs = {j.id: j for j in (make_job("j-out", instance_id=10), make_job("j-off", instance_id=11),
                              make_job("j-exit", instance_id=12))}
    instances = [make_instance(10, "j-out", host_id=5), make_instance(11, "j-off", host_id=6),
                 make_instance(12, "j-exit", host_id=7)]
    applied = Applied(transitioned=[
        Transition("j-out", S.INTERRUPTED, "outbid: paused", 1, cause=Cause.outbid),
        Transition("j-off", S.INTERRUPTED, "the reason is for people: never parsed", 1, cause=Cause.host_offline),
        Transition("j-exit", S.INTERRUPTED, "exited: container exited", 1, cause=Cause.exited)])
    SchedulerLoop._note_failed_hosts(loop, Snapshot(jobs=jobs, instances=instances), applied, clock.now)
    assert loop.exclusions.live(clock.now) == {6, 7}
    loop.run_pass()
    assert loop.metrics.excluded[-1] == 2


# --- fleet memory across restarts -------------------------------------------------------------------------


def _learned() -> PolicyPlacer:
    """A placer that ran our job 20 h on host 7, saw it go offline twice and our bid there outbid once."""
    placer, job = _placer_seeing(host=7)
    inst = make_instance(100, host_id=7, gpu_name="RTX 4090", reliability=0.99, is_bid=True, min_bid=0.4)
    snap = Snapshot(jobs={job.id: job}, instances=[inst])
    placer.learn(snap, [], 3600.0 * 20)  # 20 h of our job running there
    placer.learn(snap, [(job.id, Cause.host_offline), (job.id, Cause.host_offline)], 3600.0 * 20)
    stopped = inst.model_copy(update={"actual_status": "stopped"})
    placer.learn(Snapshot(jobs={job.id: job}, instances=[stopped]), [], 3600.0 * 20)  # our bid paused: an outbid
    placer.fleet.observe_back("offline", 5.0)
    return placer


def test_fleet_stats_survive_a_json_round_trip_and_listed_only_hosts_are_dropped(redis_client: redis.Redis) -> None:
    placer = _learned()
    placer.fleet.see(99, "RTX 3090", 0.9)  # only listed: nothing learned, nothing to keep
    memory = FleetMemory(redis_client, "t")
    assert memory.save(placer.fleet)
    back = memory.load()
    assert back is not None and set(back.hosts) == {7} and not back.watch_all
    for host in (7, 99):
        args = (np.array([host]), np.array(["RTX 4090"], dtype=object), np.array([0.99]), 0.05)
        assert np.allclose(rental_hazards(back, *args), rental_hazards(placer.fleet, *args))
    assert back.exposure(7) == pytest.approx(20.0) and back.hosts[7].offline == 2 and back.hosts[7].outbid[0] == 1
    assert back.expected_downtime_h("offline") == pytest.approx(placer.fleet.expected_downtime_h("offline"))
    assert not memory.save(placer.fleet), "at most once a minute"
    assert memory.save(placer.fleet, force=True)


def test_an_unreadable_memory_is_ignored_not_fatal(redis_client: redis.Redis) -> None:
    memory = FleetMemory(redis_client, "t")
    assert memory.load() is None
    short_outbid = ('{"v": 1, "clock_h": 0, "watch_all": false, "hosts": {"7": {"since_h": 0, "losses": 0, '
                    '"offline": 0, "outbid": [1, 2]}}, "gpus": {}, "gpu_hosts": {}, "downtime": {}}')
    for raw in ("{not json", '{"v": 99}', '{"v": 1, "clock_h": 1}', short_outbid, "[]"):
        redis_client.set("t:fleet_stats", raw)
        assert memory.load() is None, raw


def test_a_new_leader_starts_from_what_the_last_one_learned(redis_client: redis.Redis) -> None:
    market, clock = RecordingMarketplace([make_offer(1, dph_total=0.3)]), FakeClock(1_000_000.0)
    _, first = build(redis_client, market, clock)
    first.memory = FleetMemory(redis_client, first.ctx.prefix)
    first.placer = _learned()
    first.run_pass()  # leads, saves what it knows
    first.stop()
    first.lease.release(first.owner, first.token)  # type: ignore[arg-type]
    _, second = build(redis_client, market, clock)
    second.owner = "test-2"
    second.memory = FleetMemory(redis_client, second.ctx.prefix)
    assert second.placer.fleet.hosts == {}  # type: ignore[attr-defined]
    second.run_pass()
    assert second.placer.fleet.hosts[7].offline == 2  # type: ignore[attr-defined]
