"""The RQ path of the actions: the applier enqueues, a worker runs the idempotent create/destroy."""

from __future__ import annotations

from rq import SimpleWorker

from tests.loop.factories import make_offer, make_spec
from tests.market_doubles import RecordingMarketplace
from vastfleet.queue import JobStore
from vastfleet.queue.actions import ACTION_QUEUES, action_queue, raw_connection
from vastfleet.scheduler import actions as act
from vastfleet.scheduler.apply import Applier
from vastfleet.scheduler.plan import Create, Destroy, Plan, Transition
from vastfleet.spec.job import JobState
from vastfleet.spec.market import CreateRequest


def test_create_and_destroy_through_rq_workers(redis_client) -> None:
    market = RecordingMarketplace([make_offer(1)])
    store = JobStore(redis_client)
    ctx = act.ActionContext(store=store, market=market, redis=redis_client, prefix="vf",
                            build_request=lambda job, epoch, bid: CreateRequest(
                                image="img", disk_gb=10, label=f"vf:{job.id}:{epoch}", onstart="true", bid=bid))
    act.register("rq-test", ctx)
    try:
        job = store.submit(make_spec())
        applier = Applier(ctx, inline=False, context_key="rq-test")
        done = applier.apply(Plan([Transition(job.id, JobState.PLACING, "placed", 0, {"offer_id": 1}),
                                   Create(job.id, 1, 1, None), Create(job.id, 1, 1, None)]))
        assert done.creates == 1, "one create queued per attempt"
        assert not market.methods_called(), "nothing runs until a worker takes it"
        conn = raw_connection(redis_client)
        SimpleWorker([action_queue(redis_client, q) for q in ACTION_QUEUES], connection=conn).work(burst=True)
        job = store.get(job.id)
        assert job.state == JobState.BOOTING and job.instance_id in market.instances
        applier.apply(Plan([Destroy(job.instance_id, job.id, 1, "test")]))
        assert act.obligations(ctx)[job.instance_id]["reason"] == "test", "durable before the call"
        SimpleWorker([action_queue(redis_client, q) for q in ACTION_QUEUES], connection=conn).work(burst=True)
        assert job.instance_id not in market.instances
        assert job.instance_id in act.obligations(ctx), "dropped only when a listing shows it gone"
    finally:
        act.unregister("rq-test")
