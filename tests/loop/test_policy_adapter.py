"""The loop on the bidding policy: placements through `decide_placements`, outbid through `on_outbid`."""

from __future__ import annotations

from tests.loop.factories import NOW, make_instance, make_job, make_offer, make_spec
from vastfleet.scheduler.placement import default_placer
from vastfleet.scheduler.plan import PlanParams
from vastfleet.scheduler.policy_adapter import PolicyPlacer, merge_offers
from vastfleet.spec.job import JobState


def test_the_loop_uses_the_policy_when_it_is_installed() -> None:
    assert isinstance(default_placer(), PolicyPlacer)


def test_policy_places_an_interruptible_job_with_a_bid_and_a_reason() -> None:
    job = make_job(state=JobState.PENDING, instance_id=None, epoch=0, spec=make_spec(interruptible="always"))
    offers = {job.id: [make_offer(1, dph_total=0.5, min_bid=0.2, is_bid=True),
                       make_offer(2, dph_total=0.9, min_bid=0.5, is_bid=True)]}
    [placement] = PolicyPlacer()([job], offers, NOW)
    assert placement.offer_id == 1 and placement.bid is not None and placement.bid >= 0.2 and placement.reason


def test_merge_keeps_one_row_per_ask_preferring_the_bid_search() -> None:
    rows = merge_offers({"a": [make_offer(1, is_bid=False)], "b": [make_offer(1, is_bid=True), make_offer(2)]})
    assert sorted(o.id for o in rows) == [1, 2] and next(o for o in rows if o.id == 1).is_bid


def test_outbid_waits_first_then_asks_the_policy() -> None:
    placer = PolicyPlacer()
    params = PlanParams(outbid_wait_s=5)
    job = make_job(bid=0.25, spec=make_spec(interruptible="always"))
    inst = make_instance(status="stopped", is_bid=True, gpu_name="RTX 4090", num_gpus=1, host_id=1, machine_id=1,
                         dph_total=0.25, min_bid=0.3, reliability=0.99)
    assert placer.on_outbid(job, inst, 2.0, params).action == "wait"
    placer.offers = {}  # nowhere else to go: raising in place is the only way on
    choice = placer.on_outbid(job, inst, 10.0, params)
    assert choice.action in ("raise", "requeue") and choice.reason
    if choice.action == "raise":
        assert choice.price is not None and choice.price >= 0.3
        already = job.model_copy(update={"bid": choice.price})
        assert placer.on_outbid(already, inst, 10.0, params).action == "wait", "never raise to the same bid twice"
