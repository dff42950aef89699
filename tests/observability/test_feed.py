"""The exporter's feed from the control plane (`PassFeed`, `CommitFeed`), pass by pass on a real JobStore
(real redis-server) with a controlled clock: what each fact records, with which labels, and only once."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis

from vastfleet.metrics import FleetMetrics
from vastfleet.metrics.feed import CommitFeed, PassFeed
from vastfleet.queue import JobStore
from vastfleet.scheduler.apply import Applied
from vastfleet.scheduler.labels import label_for
from vastfleet.scheduler.plan import Create, Plan, Snapshot, Transition
from vastfleet.scheduler.supervise import Beat, Cause
from vastfleet.spec.job import CheckpointRef, Job, JobState
from vastfleet.spec.jobspec import JobSpec
from vastfleet.spec.market import Instance, Offer

S = JobState
PREFIX = "vffeed"


def value(m: FleetMetrics, name: str, **labels: str) -> float:
    got = m.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


class World:
    def __init__(self, client: redis.Redis) -> None:
        self.t = 1000.0
        self.store = JobStore(client, prefix=f"{PREFIX}{uuid.uuid4().hex[:6]}", clock=lambda: self.t)
        self.m = FleetMetrics(clock=lambda: self.t)
        self.feed = PassFeed(self.m, self.store, PREFIX, clock=lambda: self.t)

    def job(self, **spec: Any) -> Job:
        return self.store.submit(JobSpec.model_validate({"name": "j", "image": "python:3.11-slim", "run": "true",
                                                         "resources": {"gpu": ["RTX_4090"]}, **spec}))

    def move(self, job: Job, to: JobState, at: float, **fields: Any) -> Job:
        self.t = at
        return self.store.transition(job.id, to, "test", **fields)

    def instance(self, job: Job, iid: int, status: str = "running", **kw: Any) -> Instance:
        return Instance(id=iid, label=label_for(job.id, job.epoch, PREFIX), gpu_name="RTX 4090", num_gpus=2,
                        actual_status=status, **{"dph_total": 0.5, "is_bid": True, "bid_price": 0.4,
                                                 "disk_space": 73.0, **kw})

    def run(self, at: float, jobs: list[Job], instances: list[Instance], *, plan: Plan | None = None,
            applied: Applied | None = None, beats: dict[str, Beat] | None = None,
            offers: dict[str, list[Offer]] | None = None) -> None:
        self.t = at
        snap = Snapshot(jobs={j.id: j for j in jobs}, instances=instances, beats=beats or {}, offers=offers or {})
        self.feed.after_pass(snap, plan, applied, at)


def offer(oid: int, machine: int, dph: float, is_bid: bool) -> Offer:
    return Offer(id=oid, machine_id=machine, host_id=1, gpu_name="RTX 4090", num_gpus=2, gpu_ram_gb=24,
                 cuda_max_good=12, dlperf=10, dph_total=dph, min_bid=0.3, storage_cost=0.2, is_bid=is_bid)


@pytest.fixture
def world(redis_client: redis.Redis) -> World:
    return World(redis_client)


def test_a_run_with_one_interruption_feeds_every_job_metric_once(world: World) -> None:
    w, m = world, world.m
    job = w.job(budget_usd=10, resources={"gpu": ["RTX_4090"], "max_price_per_hour": 2})
    pending = job
    job = w.move(job, S.PLACING, 1010)  # waited 10 s
    bid, on_demand = offer(7, 70, 0.4, True), offer(8, 70, 1.2, False)
    w.run(1010, [pending], [], plan=Plan([Create(job.id, 1, 7, 0.4)]), offers={job.id: [bid, on_demand]})
    job = w.move(job, S.BOOTING, 1012, instance_id=5)
    job = w.move(job, S.RUNNING, 1020)
    inst = w.instance(job, 5)
    w.run(1021, [job], [inst])  # first sight: accrual starts, the start is reported
    assert value(m, "vastfleet_job_wait_seconds_count") == 1
    assert value(m, "vastfleet_job_wait_seconds_sum") == pytest.approx(20.0)  # PENDING 1000 -> RUNNING 1020
    w.run(1021 + 3600, [job], [inst])  # one hour running at 0.5 $/h, on-demand 1.2 $/h
    labels = {"gpu_model": "RTX 4090", "bid_kind": "bid"}
    assert value(m, "vastfleet_spend_dollars_total", kind="compute", **labels) == pytest.approx(0.5)
    assert value(m, "vastfleet_on_demand_equivalent_dollars_total", **labels) == pytest.approx(1.2)
    assert value(m, "vastfleet_budget_total_dollars") == 10
    assert value(m, "vastfleet_budget_hourly_cap_dollars") == 2
    assert value(m, "vastfleet_budget_spent_dollars") == pytest.approx(0.5)
    assert value(m, "vastfleet_job_wait_seconds_count") == 1  # seen running again: not a second start

    # Interrupted: checkpoint committed at 4000, last heartbeat at 4600 -> 600 s x 2 GPUs lost.
    w.t = 4000
    ref = CheckpointRef(epoch=1, step=5, prefix="p/", files={}, committed_at=4000.0)
    job = w.store.commit_checkpoint(job.id, 1, ref)
    stopped = w.instance(job, 5, status="stopped")
    w.run(4621, [job], [stopped], beats={job.id: Beat(at=4600.0, epoch=1)},
          applied=Applied(transitioned=[Transition(job.id, S.INTERRUPTED, "outbid: paused by a higher bid", job.epoch,
                                                   cause=Cause.outbid)]))
    assert value(m, "vastfleet_preemptions_total", gpu_model="RTX 4090", kind="outbid") == 1
    assert value(m, "vastfleet_work_lost_gpu_seconds_total", gpu_model="RTX 4090") == pytest.approx(1200.0)
    # the stopped instance bills its disk: 0.2 $/GB-month x 73 GB / 730 h = 0.02 $/h (since 4621)
    w.run(4621 + 3600, [job], [stopped])
    assert value(m, "vastfleet_spend_dollars_total", kind="storage", **labels) == pytest.approx(0.02)

    job = w.move(job, S.INTERRUPTED, 8300)
    job = w.move(job, S.PENDING, 8301)
    job = w.move(job, S.PLACING, 8310)
    job = w.move(job, S.BOOTING, 8311, instance_id=6)
    job = w.move(job, S.RUNNING, 8330)
    w.run(8331, [job], [w.instance(job, 6, is_bid=False, bid_price=None)])
    assert value(m, "vastfleet_job_wait_seconds_count") == 2
    assert value(m, "vastfleet_job_wait_seconds_sum") == pytest.approx(20.0 + 29.0)
    assert value(m, "vastfleet_recovery_seconds_count") == 1
    assert value(m, "vastfleet_recovery_seconds_sum") == pytest.approx(30.0)  # INTERRUPTED 8300 -> 8330

    job = w.move(job, S.SUCCEEDED, 8340, exit_code=0)
    w.run(8341, [job], [w.instance(job, 6, is_bid=False, bid_price=None)])
    w.run(8342, [], [])
    assert value(m, "vastfleet_jobs_finished_total", state="SUCCEEDED") == 1
    assert value(m, "vastfleet_job_cost_dollars_count", state="SUCCEEDED") == 1
    assert value(m, "vastfleet_job_cost_dollars_sum", state="SUCCEEDED") == pytest.approx(0.5 + 0.02 + 0.5 * 10 / 3600)
    assert value(m, "vastfleet_budget_total_dollars") == 0


def test_a_job_cancelled_while_pending_is_read_back_once_it_leaves_the_listing(world: World) -> None:
    w = world
    job = w.job()
    w.run(1001, [job], [])
    w.store.cancel(job.id)
    w.run(1002, [], [])
    w.run(1003, [], [])
    assert value(w.m, "vastfleet_jobs_finished_total", state="CANCELLED") == 1
    assert value(w.m, "vastfleet_job_cost_dollars_sum", state="CANCELLED") == 0


def test_a_start_before_the_feed_began_is_not_reported(world: World) -> None:
    w = world
    job = w.move(w.job(), S.PLACING, 990)
    job = w.move(job, S.BOOTING, 991, instance_id=5)
    job = w.move(job, S.RUNNING, 995)
    w.feed = PassFeed(w.m, w.store, PREFIX, clock=lambda: 1000.0)  # a scheduler (re)started at 1000
    w.run(1001, [job], [w.instance(job, 5)])
    assert value(w.m, "vastfleet_job_wait_seconds_count") == 0


def test_commit_feed_times_an_upload_from_its_first_presigned_url() -> None:
    m, t = FleetMetrics(), [100.0]
    feed = CommitFeed(m, clock=lambda: t[0])

    class Store:
        def presign_put(self, key: str, size: int, sha256: str, expires_s: int = 3600) -> str:
            return f"http://127.0.0.1/{key}"

    store = feed.watch(Store())
    assert isinstance(store, Store)
    assert store.presign_put("j/1/5/a", 1, "x") == "http://127.0.0.1/j/1/5/a"
    t[0] = 101.0
    store.presign_put("j/1/5/b", 1, "x")
    ref = CheckpointRef(epoch=1, step=5, prefix="j/1/5/", files={}, committed_at=104.0, bytes=300)
    feed.on_commit(None, ref)  # type: ignore[arg-type]
    assert value(m, "vastfleet_checkpoint_upload_bytes_total") == 300
    assert value(m, "vastfleet_checkpoint_upload_seconds_sum") == pytest.approx(4.0)
