"""The loop against a real Redis and an in-memory marketplace: settled passes, adoption, observation errors."""

from __future__ import annotations

import pytest
import redis

from tests.helpers import FakeClock
from tests.loop.doubles import MemoryMarket
from tests.loop.factories import make_offer, make_spec
from tests.market_doubles import RecordingMarketplace
from vastfleet.errors import MarketUnavailable
from vastfleet.queue import JobStore
from vastfleet.queue.heartbeats import record_heartbeat
from vastfleet.scheduler import actions as act
from vastfleet.scheduler.loop import LoopConfig, SchedulerLoop
from vastfleet.scheduler.plan import PlanParams
from vastfleet.scheduler.supervise import Timings
from vastfleet.spec.job import Job, JobState
from vastfleet.spec.market import CreateRequest

S = JobState


def build(redis_client: redis.Redis, market: MemoryMarket | RecordingMarketplace, clock: FakeClock) -> tuple[JobStore, SchedulerLoop]:
    store = JobStore(redis_client, clock=clock)

    def request(job: Job, epoch: int, bid: float | None) -> CreateRequest:
        return CreateRequest(image=job.spec.image, disk_gb=job.spec.resources.disk_gb,
                             label=f"vf:{job.id}:{epoch}", onstart="true", bid=bid)

    ctx = act.ActionContext(store=store, market=market, redis=redis_client, build_request=request)
    timings = Timings(heartbeat_lost_s=5, boot_timeout_s=30, scheduling_timeout_s=20, gone_grace_s=3)
    loop = SchedulerLoop(store, market, redis_client, ctx, inline=True, clock=clock, owner="test",
                         config=LoopConfig(interval_s=0.01, params=PlanParams(timings=timings, outbid_wait_s=4)))
    return store, loop


def beat(redis_client: redis.Redis, job: Job, at: float) -> None:
    record_heartbeat(redis_client, job.id, job.epoch, at, {"progress": {}})


def test_place_boot_run_then_a_settled_pass_makes_no_marketplace_call_but_the_listing(redis_client) -> None:
    market, clock = RecordingMarketplace([make_offer(1, dph_total=0.4), make_offer(2, dph_total=0.3)]), FakeClock(1_000_000.0)
    store, loop = build(redis_client, market, clock)
    job = store.submit(make_spec(interruptible="never"))
    loop.run_pass()
    job = store.get(job.id)
    assert job.state == S.BOOTING and job.offer_id == 2 and job.instance_id in market.instances
    assert market.instances[job.instance_id].label == f"vf:{job.id}:1"
    market.set_status(job.instance_id, "running")
    beat(redis_client, job, clock.now)
    loop.run_pass()
    assert store.get(job.id).state == S.RUNNING
    market.reset_calls()
    for _ in range(3):
        clock.now += 1
        beat(redis_client, job, clock.now)
        result = loop.run_pass()
        assert result.plan is not None and result.plan.actions == []
    assert market.methods_called() == ["list_instances"] * 3, "a settled world: reads only, no search, create or destroy"


def test_a_failed_listing_is_an_observation_error_never_all_gone(redis_client) -> None:
    market, clock = RecordingMarketplace([make_offer(1), make_offer(2)]), FakeClock(1_000_000.0)
    store, loop = build(redis_client, market, clock)
    job = store.submit(make_spec(interruptible="never"))
    loop.run_pass()
    market.set_status(store.get(job.id).instance_id, "running")
    beat(redis_client, store.get(job.id), clock.now)
    loop.run_pass()
    market.fail_next("list_instances", MarketUnavailable("listing failed"))
    clock.now += 60  # long past every bound: a wrong 'all gone' would re-queue and rent again
    market.reset_calls()
    result = loop.run_pass()
    assert not result.observed and result.error and "observation" in result.error
    assert store.get(job.id).state == S.RUNNING
    assert market.methods_called() == ["list_instances"], "nothing decided, nothing acted on"


def test_killed_between_create_and_record_adopts_instead_of_renting_twice(redis_client) -> None:
    market, clock = MemoryMarket([make_offer(1), make_offer(2, dph_total=0.9)]), FakeClock(1_000_000.0)
    store, loop = build(redis_client, market, clock)
    job = store.submit(make_spec(interruptible="never"))
    market.crash_after_create = True
    with pytest.raises(KeyboardInterrupt):
        loop.run_pass()  # rented, then "killed" before recording
    assert store.get(job.id).state == S.PLACING and len(market.instances) == 1
    # The crashed worker's lock would expire; simulate the expiry.
    redis_client.delete(loop.ctx.create_lock_key(job.id, 1), loop.ctx.create_queued_key(job.id, 1))
    market.crash_after_create = False
    _, restarted = build(redis_client, market, clock)
    restarted.owner = "test"
    restarted.run_pass()
    job = store.get(job.id)
    assert job.state == S.BOOTING and job.instance_id == next(iter(market.instances))
    assert market.names().count("create_instance") == 1 and len(market.instances) == 1


def test_the_create_action_adopts_by_label_too(redis_client) -> None:
    market, clock = MemoryMarket([make_offer(1), make_offer(2)]), FakeClock(1_000_000.0)
    store, loop = build(redis_client, market, clock)
    job = store.submit(make_spec(interruptible="never"))
    job = store.transition(job.id, S.PLACING, "placed", offer_id=1)
    market.crash_after_create = True
    with pytest.raises(KeyboardInterrupt):
        act.create(loop.ctx, job.id, job.epoch, 1, None)
    market.crash_after_create = False
    assert act.create(loop.ctx, job.id, job.epoch, 2, None) == next(iter(market.instances))
    assert market.names().count("create_instance") == 1


def test_preemption_requeues_and_the_old_instance_is_destroyed_and_forgotten(redis_client) -> None:
    market, clock = RecordingMarketplace([make_offer(1), make_offer(2, dph_total=0.9)]), FakeClock(1_000_000.0)
    store, loop = build(redis_client, market, clock)
    job = store.submit(make_spec(interruptible="never"))
    loop.run_pass()
    first = store.get(job.id).instance_id
    market.set_status(first, "running")
    beat(redis_client, store.get(job.id), clock.now)
    loop.run_pass()
    market.set_status(first, "offline")
    clock.now += 10
    loop.run_pass()  # interrupted + re-queued; placement happens on the next pass
    job = store.get(job.id)
    assert job.state == S.PENDING and job.preemptions == 1
    loop.run_pass()  # the old instance is an orphan now: obligation + destroy; the job is placed again
    job = store.get(job.id)
    assert first not in market.instances and job.state == S.BOOTING and job.instance_id != first
    assert act.obligations(loop.ctx) == {first: act.obligations(loop.ctx)[first]}
    loop.run_pass()
    assert act.obligations(loop.ctx) == {}, "forgotten once the listing shows it gone"


def test_only_one_leader_acts(redis_client) -> None:
    market, clock = RecordingMarketplace([make_offer(1)]), FakeClock(1_000_000.0)
    store, a = build(redis_client, market, clock)
    _, b = build(redis_client, market, clock)
    b.owner = "other"
    store.submit(make_spec(interruptible="never"))
    assert a.run_pass().leader and not b.run_pass().leader
    assert market.methods_called().count("create_instance") == 1


def test_a_job_no_offer_fits_is_searched_for_with_backoff(redis_client) -> None:
    market, clock = RecordingMarketplace([make_offer(1, gpu_name="RTX 3090")]), FakeClock(1_000_000.0)
    store, loop = build(redis_client, market, clock)
    store.submit(make_spec(interruptible="never"))  # wants an RTX 4090: nothing fits
    searches = []
    for _ in range(12):
        market.reset_calls()
        loop.run_pass()
        searches.append(market.methods_called().count("search_offers"))
        clock.now += 0.01  # passes 10 ms apart: the backoff (>= the pass interval, doubling) spaces searches
    # the first pass also reads the whole market once (kept for minutes) to say which filter removed what
    assert searches[0] == 2 and sum(searches) - 1 < 12


def test_the_loop_feeds_the_exporter(redis_client) -> None:
    from vastfleet.metrics import FleetMetrics

    market, clock = RecordingMarketplace([make_offer(1), make_offer(2, dph_total=0.9)]), FakeClock(1_000_000.0)
    store, loop = build(redis_client, market, clock)
    metrics = FleetMetrics()
    loop.metrics = metrics
    job = store.submit(make_spec(interruptible="never"))
    loop.run_pass()
    iid = store.get(job.id).instance_id
    market.set_status(iid, "running")
    beat(redis_client, store.get(job.id), clock.now)
    loop.run_pass()
    market.set_status(iid, "offline")
    clock.now += 10
    loop.run_pass()
    reg = metrics.registry
    assert reg.get_sample_value("vastfleet_scheduler_pass_seconds_count") == 3
    assert reg.get_sample_value("vastfleet_preemptions_total",
                                {"gpu_model": "RTX 4090", "kind": "host_offline"}) == 1
    assert reg.get_sample_value("vastfleet_instances", {"status": "offline", "gpu_model": "RTX 4090",
                                                        "bid_kind": "on_demand"}) == 1


def test_a_running_bid_is_lowered_in_place_when_the_lowest_running_bid_falls(redis_client) -> None:
    market = RecordingMarketplace([make_offer(1, dph_total=0.9, min_bid=0.4, is_bid=True, reliability=0.999)])
    clock = FakeClock(1_000_000.0)
    store, loop = build(redis_client, market, clock)
    job = store.submit(make_spec(interruptible="always"))
    loop.run_pass()
    job = store.get(job.id)
    assert job.bid is not None and job.bid >= 0.4
    market.set_status(job.instance_id, "running", min_bid=0.4)
    beat(redis_client, job, clock.now)
    loop.run_pass()
    assert store.get(job.id).state == S.RUNNING
    first_bid = store.get(job.id).bid
    market.set_status(job.instance_id, "running", min_bid=0.2)  # the competing bids went away
    market.reset_calls()
    clock.now += 1
    beat(redis_client, job, clock.now)
    loop.run_pass()
    lowered = store.get(job.id)
    assert lowered.state == S.RUNNING and lowered.epoch == job.epoch, "no restart, no new attempt"
    assert 0.2 <= lowered.bid < 0.95 * first_bid
    assert "change_bid" in market.methods_called() and "start_instance" not in market.methods_called()
    market.reset_calls()
    clock.now += 1
    beat(redis_client, job, clock.now)
    loop.run_pass()
    assert "change_bid" not in market.methods_called(), "the same bid is not set twice"


def test_a_pass_that_lost_the_lead_while_it_observed_drops_no_salvage_and_books_no_spend(redis_client) -> None:
    """Found by bench/chaos.py: a scheduler whose observation outlived its lease (a slow marketplace) read the
    jobs before the new leader interrupted an attempt and started salvaging its disk; it then dropped that
    salvage record as stale, and the new leader destroyed the disk with the checkpoint. It also accrued the
    spend of an interval the new leader accrues too. Neither may happen: only the leader writes."""
    from vastfleet.scheduler.salvage import Salvages
    from vastfleet.scheduler.spend import SpendLedger
    from vastfleet.scheduler.supervise import PendingCheckpoint

    market, clock = RecordingMarketplace([make_offer(1)]), FakeClock(1_000_000.0)
    store, a = build(redis_client, market, clock)
    _, b = build(redis_client, market, clock)
    b.owner = "other"
    ledger = SpendLedger(redis_client, clock=clock)
    for loop in (a, b):
        loop.config = LoopConfig(interval_s=0.01, lease_ttl_s=3.0,
                                 params=PlanParams(timings=loop.config.params.timings, outbid_wait_s=4, salvage=True))
        loop.lease.ttl_s = 3.0
        loop.ctx.spend = ledger
    job = store.submit(make_spec(interruptible="never"))
    a.run_pass()
    iid = store.get(job.id).instance_id
    market.instances[iid] = market.instances[iid].model_copy(
        update={"actual_status": "running", "dph_base": 0.5, "storage_dph": 0.01})
    beat(redis_client, store.get(job.id), clock.now)
    a.run_pass()
    job = store.get(job.id)
    assert job.state == S.RUNNING
    booked = ledger.total()

    listing = market.list_instances
    armed = [True]

    def slow_listing(label: str | None = None) -> list:
        rows = listing(label)
        if armed and armed.pop():  # while a observes: its lease runs out, b leads, interrupts and salvages
            clock.now += 10
            assert b.lease.acquire(b.owner) is not None
            store.transition(job.id, S.INTERRUPTED, "b: host offline", expected_epoch=job.epoch)
            Salvages(redis_client).start(job.id, job.epoch, iid, PendingCheckpoint(12, "step-12", "a" * 12, 1, 9),
                                         clock.now)
        return rows

    market.list_instances = slow_listing  # type: ignore[method-assign]
    result = a.run_pass()
    assert not result.applied or result.applied.transitions == 0
    rec = Salvages(redis_client).get(job.id)
    assert rec is not None and rec.status == "queued", "the stale pass kept its hands off the salvage"
    assert ledger.total() == pytest.approx(booked), "and off the books"
    b.run_pass()  # the leader: the salvage goes on, the disk is kept
    assert iid in market.instances and store.get(job.id).state == S.INTERRUPTED
