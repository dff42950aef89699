"""The scheduler tells what it decides (issue 16): each decision and action logged once, on one line, with
job, epoch, instance and reason; and a pending job that no offer fits says which filter removed how many
offers, on its record and in one event. The loop runs pass by pass (inline actions) against the simulator
through the real `vastai` client and a real redis-server."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.helpers import FakeClock
from tests.sim_fixtures import SimHandle, running_sim
from vastfleet.market.vast import VastMarketplace
from vastfleet.queue import JobStore
from vastfleet.scheduler import actions as act
from vastfleet.scheduler.loop import LoopConfig, SchedulerLoop
from vastfleet.spec import job_spec_from_dict
from vastfleet.spec.job import Job, JobState
from vastfleet.spec.market import CreateRequest

S = JobState


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimHandle]:
    with running_sim(tmp_path, seed=3, hosts=16) as handle:
        yield handle


def build(redis_client: redis.Redis, sim: SimHandle, clock: FakeClock) -> tuple[JobStore, SchedulerLoop]:
    store = JobStore(redis_client, clock=clock)
    market = VastMarketplace(sim.api_key, sim.url)

    def request(job: Job, epoch: int, bid: float | None) -> CreateRequest:
        return CreateRequest(image=job.spec.image, disk_gb=job.spec.resources.disk_gb,
                             label=f"vf:{job.id}:{epoch}", onstart="sleep 600", bid=bid)

    ctx = act.ActionContext(store=store, market=market, redis=redis_client, build_request=request)
    return store, SchedulerLoop(store, market, redis_client, ctx, inline=True, clock=clock, owner="test",
                                config=LoopConfig(interval_s=0.01))


def spec(**resources: object) -> object:
    return job_spec_from_dict({"name": "told", "image": "python:3.11-slim", "run": "true",
                               "interruptible": "never", "resources": {"gpu": ["RTX_4090"], **resources}})


def lines_about(caplog: pytest.LogCaptureFixture, job_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if f"job={job_id} " in r.getMessage()]


def test_each_decision_and_action_is_logged_once_with_job_epoch_instance_and_reason(
        redis_client: redis.Redis, sim: SimHandle, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vastfleet")
    clock = FakeClock(time.time())
    store, loop = build(redis_client, sim, clock)
    job = store.submit(spec())  # type: ignore[arg-type]
    loop.run_pass()  # placed, rented (inline), booting
    job = store.get(job.id)
    assert job.state == S.BOOTING and job.instance_id is not None
    inst = job.instance_id
    store.cancel(job.id)
    loop.run_pass()  # the cancelled attempt's instance is torn down
    loop.run_pass()  # and a pass later seen gone: nothing more to say
    said = lines_about(caplog, job.id)
    placed = [m for m in said if m.startswith("transition ") and "to=PLACING" in m]
    assert len(placed) == 1 and "epoch=1 instance=- " in placed[0] and "expected" in placed[0]
    created = [m for m in said if m.startswith("created ")]
    assert created == [(f"created job={job.id} epoch=1 instance={inst} offer={job.offer_id}:"
                       f" rented offer {job.offer_id} on demand")]
    booting = [m for m in said if "to=BOOTING" in m]
    assert len(booting) == 1 and f"epoch=1 instance={inst} " in booting[0]
    cancelled = [m for m in said if "to=CANCELLED" in m]
    assert len(cancelled) == 1 and "cancelled by user" in cancelled[0]
    destroys = [m for m in said if m.startswith("destroy job=")]
    assert len(destroys) == 1 and f"instance={inst}" in destroys[0]
    assert len([m for m in said if m.startswith("destroy called ")]) == 1
    assert all(m.count("\n") == 0 for m in said)


def test_a_job_no_offer_fits_says_which_filter_removed_how_many_once(
        redis_client: redis.Redis, sim: SimHandle, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vastfleet")
    clock = FakeClock(time.time())
    store, loop = build(redis_client, sim, clock)
    big = store.submit(job_spec_from_dict({  # 8x H100 at most $0.10/h: nothing on any market
        "name": "big", "image": "x", "run": "y",
        "resources": {"gpu": ["H100_SXM"], "gpus": 8, "max_price_per_hour": 0.10}}))
    for _ in range(4):
        loop.run_pass()
        clock.advance(120)  # past the search backoff: each pass searches again
    job = store.get(big.id)
    assert job.state == S.PENDING
    assert job.reason.startswith("no offer fits: of ") and "removed" in job.reason, job.reason
    assert "price_cap removed" in job.reason or "gpu_model removed" in job.reason
    notes = [e for e in store.events(big.id) if e.kind == "unplaced"]
    assert len(notes) == 1 and notes[0].reason == job.reason
    logged = [m for m in lines_about(caplog, big.id) if m.startswith("unplaced ")]
    assert len(logged) == 1 and job.reason in logged[0]

    # the whole market when its own search finds nothing: which filter removed the RTX 4090s too
    other = store.submit(job_spec_from_dict({
        "name": "other", "image": "x", "run": "y", "resources": {"gpu": ["H100_SXM"], "gpus": 16}}))
    loop.run_pass()
    reason = store.get(other.id).reason
    assert "on the whole market" in reason and "gpu_model removed" in reason, reason
