"""The live loop's translator for the decision step (`PolicyPlacer.decide` and `.learn`)."""

from __future__ import annotations

import pytest

from tests.loop.factories import NOW, make_instance, make_job, make_offer, make_spec
from vastfleet.scheduler.plan import PolicyRequest, Snapshot
from vastfleet.scheduler.policy.step import ChangeBid, Move, Place
from vastfleet.scheduler.policy_adapter import PolicyPlacer, merge_offers
from vastfleet.scheduler.supervise import Cause
from vastfleet.spec.job import Job, JobState
from vastfleet.spec.market import Offer


def place(placer: PolicyPlacer, jobs: list[Job], offers: dict[str, list[Offer]], now: float = NOW) -> list[Place]:
    return [d for d in placer.decide(PolicyRequest(now, offers, pending=jobs)) if isinstance(d, Place)]


def test_the_loop_uses_the_policy(redis_client) -> None:  # type: ignore[no-untyped-def]
    from tests.helpers import FakeClock
    from tests.loop.test_loop import build
    from tests.market_doubles import RecordingMarketplace

    _, loop = build(redis_client, RecordingMarketplace([]), FakeClock())
    assert isinstance(loop.placer, PolicyPlacer)


def test_policy_places_an_interruptible_job_with_a_bid_and_a_reason() -> None:
    job = make_job(state=JobState.PENDING, instance_id=None, epoch=0, spec=make_spec(interruptible="always"))
    offers = {job.id: [make_offer(1, dph_total=0.5, min_bid=0.2, is_bid=True),
                       make_offer(2, dph_total=0.9, min_bid=0.5, is_bid=True)]}
    [placement] = place(PolicyPlacer(), [job], offers)
    assert placement.offer_id == 1 and placement.bid is not None and placement.bid >= 0.2 and placement.reason


def test_merge_keeps_one_row_per_ask_preferring_the_bid_search() -> None:
    rows = merge_offers({"a": [make_offer(1, is_bid=False)], "b": [make_offer(1, is_bid=True), make_offer(2)]})
    assert sorted(o.id for o in rows) == [1, 2] and next(o for o in rows if o.id == 1).is_bid


def test_a_paused_attempt_raises_in_place_when_there_is_nowhere_else_within_its_ceiling() -> None:
    placer = PolicyPlacer()
    job = make_job(bid=0.25, offer_dph=0.5, spec=make_spec(interruptible="always"))
    inst = make_instance(status="stopped", is_bid=True, gpu_name="RTX 4090", num_gpus=1, host_id=1, machine_id=1,
                         dph_total=0.25, min_bid=0.3, reliability=0.99)
    [choice] = placer.decide(PolicyRequest(NOW, {}, paused=[(job, inst)]))  # nowhere else to go
    assert isinstance(choice, ChangeBid) and choice.restart and 0.3 <= choice.bid <= 0.5 and choice.reason
    over = inst.model_copy(update={"min_bid": 0.9})  # winning it back would pay above its on-demand price
    [moved] = placer.decide(PolicyRequest(NOW, {}, paused=[(job, over)]))
    assert isinstance(moved, Move) and not moved.graceful


def _placer_holding(remaining_hours: float) -> PolicyPlacer:
    """A placer that saw our job j-hold running on a cheap machine with `remaining_hours` of work left."""
    placer = PolicyPlacer()
    holder = make_job("j-hold", instance_id=100, bid=0.1, progress={"remaining_hours": remaining_hours})
    inst = make_instance(100, job_id="j-hold", host_id=7, machine_id=7, gpu_name="RTX 4090", num_gpus=1,
                         dph_total=0.5, min_bid=0.1, bid_price=0.1, is_bid=True, reliability=0.99)
    placer.learn(Snapshot(jobs={holder.id: holder}, instances=[inst]), [], NOW)
    return placer


def _pending(deadline_h: float) -> tuple[Job, dict[str, list[Offer]]]:
    """A pending job with 4 h of work, and the one dear offer it can rent now."""
    job = make_job("j-new", state=JobState.PENDING, instance_id=None, epoch=0, deadline_at=NOW + deadline_h * 3600,
                   progress={"remaining_hours": 4.0})
    return job, {job.id: [make_offer(2, dph_total=1.0, min_bid=0.4, is_bid=True, host_id=8, machine_id=8)]}


def test_a_pending_job_with_slack_waits_for_the_cheap_machine_our_job_frees_soon() -> None:
    placer = _placer_holding(remaining_hours=0.5)
    pending, offers = _pending(deadline_h=48)
    assert place(placer, [pending], offers) == []
    [wait] = placer.waits
    assert wait.job_id == "j-new" and "held by our job j-hold" in wait.reason
    assert NOW < wait.until < NOW + 3600 and wait.expected_cost < 0.95 * wait.cost_now


@pytest.mark.parametrize(("held_for_h", "deadline_h"), [(0.5, 4.3), (40.0, 24.0)])
def test_without_slack_to_wait_or_with_the_machine_free_too_late_the_job_rents_now(held_for_h, deadline_h) -> None:
    placer = _placer_holding(remaining_hours=held_for_h)
    pending, offers = _pending(deadline_h)
    [placement] = place(placer, [pending], offers)
    assert placement.offer_id == 2 and placer.waits == []


def test_lower_bid_only_for_a_clear_drop_of_the_lowest_running_bid() -> None:
    placer = PolicyPlacer()
    job = make_job(bid=0.4, offer_dph=0.6, spec=make_spec(interruptible="always"))
    inst = make_instance(100, host_id=7, machine_id=7, gpu_name="RTX 4090", num_gpus=1, dph_total=0.4,
                         min_bid=0.2, bid_price=0.4, is_bid=True, reliability=0.99)

    def lowered(j: Job, i) -> list:  # type: ignore[no-untyped-def]
        return [d for d in placer.decide(PolicyRequest(NOW, {}, running=[(j, i)])) if isinstance(d, ChangeBid)]

    [change] = lowered(job, inst)
    assert not change.restart and 0.2 <= change.bid < 0.38 and "no restart" in change.reason
    assert lowered(job, inst.model_copy(update={"min_bid": 0.39})) == [], "under 5% saved: not worth a call"


def _hazard_of(placer: PolicyPlacer, host: int) -> tuple[float, float]:
    """(as a bid at 10% over min_bid, on demand) for an RTX 4090 on `host` listed at reliability 0.99."""
    import numpy as np

    from vastfleet.scheduler.policy import rental_hazards

    bid, od = rental_hazards(placer.fleet, np.array([host]), np.array(["RTX 4090"], dtype=object),
                             np.array([0.99]), 0.1)
    return float(bid[0]), float(od[0])


def test_listed_offers_alone_teach_nothing_only_our_rentals_hours_count() -> None:
    # 100 hours of passes, our job running on host 1 the whole time with no loss and no outbid; one placer
    # also lists 40 other offers each pass. The live loop sees losses only on its own rentals, so the 4,000
    # offer-hours it merely listed must not move any estimate (counted like the replay's whole-market watch,
    # they would pull every gone and outbid rate of the GPU model towards zero).
    from vastfleet.scheduler.policy import FleetStats

    listing, blind, prior = PolicyPlacer(), PolicyPlacer(), PolicyPlacer()
    pending = make_job("j-wait", state=JobState.PENDING, instance_id=None, epoch=0)
    mine = make_job("j-mine", instance_id=100, bid=0.25)
    inst = make_instance(100, job_id="j-mine", host_id=1, machine_id=1, gpu_name="RTX 4090", num_gpus=1,
                         dph_total=0.5, min_bid=0.2, bid_price=0.25, is_bid=True, reliability=0.99)
    offers = {pending.id: [make_offer(i, is_bid=True) for i in range(2, 42)]}
    for hour in range(101):
        now = NOW + hour * 3600.0
        for placer, seen in ((listing, offers), (blind, {})):
            place(placer, [pending], seen, now)
            placer.learn(Snapshot(jobs={mine.id: mine}, instances=[inst], offers=seen), [], now)
    assert listing.fleet.exposure(1) == pytest.approx(100.0) and listing.fleet.exposure(5) == 0.0
    for host in (1, 5):
        assert _hazard_of(listing, host) == pytest.approx(_hazard_of(blind, host))
    quiet = _hazard_of(listing, 1)
    assert quiet[0] < _hazard_of(prior, 1)[0]  # 100 quiet hours of our own on host 1: safer than the prior
    watched_all = FleetStats(watch_all=True, hosts=listing.fleet.hosts, gpus=listing.fleet.gpus,
                             gpu_hosts=listing.fleet.gpu_hosts, clock_h=listing.fleet.clock_h)
    assert watched_all.gpu_exposure("RTX 4090") > 4000.0  # what the whole-market count would have used

    # the host fails us once: its hazard rises above the quiet estimate
    listing.learn(Snapshot(jobs={mine.id: mine}, instances=[inst]), [(mine.id, Cause.host_offline)], now)
    assert _hazard_of(listing, 1)[1] > quiet[1]


def test_each_pause_of_our_bid_counts_one_outbid_with_the_jump_it_shows() -> None:
    placer = PolicyPlacer()
    job = make_job(bid=0.25, spec=make_spec(interruptible="always"))
    paused = make_instance(status="stopped", is_bid=True, gpu_name="RTX 4090", num_gpus=1, host_id=3,
                           machine_id=3, dph_total=0.5, min_bid=0.3, reliability=0.99)
    for k in range(3):  # one pause, seen by three passes
        placer.learn(Snapshot(jobs={job.id: job}, instances=[paused]), [], NOW + 10 * k)
    counts = placer.fleet.hosts[3].outbid
    assert counts[0] == 1 and counts.max() == 1  # 0.30 / 0.25: a rise of at least 20% past our bid
    running = paused.model_copy(update={"actual_status": "running"})
    placer.learn(Snapshot(jobs={job.id: job}, instances=[running]), [], NOW + 40)
    placer.learn(Snapshot(jobs={job.id: job}, instances=[paused]), [], NOW + 50)  # paused again: a second
    assert placer.fleet.hosts[3].outbid[0] == 2


@pytest.mark.parametrize(("progress", "remaining"), [
    ({}, 8.0),  # nothing reported yet: the spec's estimate
    ({"fraction": 0.25}, 6.0),  # a fraction of the estimate
    ({"fraction": 0.5, "total_hours": 10.0}, 5.0),  # the job's own total wins
    ({"remaining_hours": 2.0}, 2.0),
])
def test_remaining_work_comes_from_progress_else_the_specs_estimate(progress, remaining) -> None:
    from vastfleet.scheduler.policy import job_view_from_job

    job = make_job(spec=make_spec(work_hours=8, deadline="12h"), progress=progress)
    assert job_view_from_job(job, NOW).remaining_work_hours == pytest.approx(remaining)


def test_a_spec_without_an_estimate_ranks_per_hour_and_a_bad_estimate_is_refused() -> None:
    from vastfleet.errors import SpecError
    from vastfleet.scheduler.policy import job_view_from_job
    from vastfleet.spec.jobspec import job_spec_from_dict

    assert job_view_from_job(make_job(progress={}), NOW).remaining_work_hours == 1.0
    with pytest.raises(SpecError, match="work_hours"):
        job_spec_from_dict({"name": "t", "image": "i", "run": "r", "resources": {"gpu": ["RTX_4090"]},
                            "work_hours": -3})
