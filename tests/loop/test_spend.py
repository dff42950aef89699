"""The spend ledger (real Redis) and the fleet's caps before a rental (plan, pure).

The ledger accrues each rental of ours from the listing's own rates: compute while it holds its GPUs, disk
always, until the destroy closes it; a restarted scheduler goes on from Redis; a ghost of a destroyed
instance is not billed again. The caps hold new rentals back, with the cap that binds as the reason.
"""

from __future__ import annotations

import pytest
import redis

from tests.loop.factories import NOW, make_instance, make_job, make_offer, make_spec
from vastfleet.scheduler.plan import PlanParams, Snapshot, decide, fleet_budget
from vastfleet.scheduler.spend import Burn, SpendLedger
from vastfleet.scheduler.supervise import Timings
from vastfleet.spec.job import JobState

S = JobState


def row(iid: int, status: str, compute: float = 0.36, storage: float = 0.04, label: str = "vf:j-a:1"):
    return make_instance(instance_id=iid, status=status).model_copy(
        update={"label": label, "dph_base": compute, "storage_dph": storage, "dph_total": compute + storage})


def test_accrual_follows_status_rates_and_the_destroy(redis_client: redis.Redis) -> None:
    clock = [1_000_000.0]
    ledger = SpendLedger(redis_client, "vf", clock=lambda: clock[0])
    ledger.opened(7, "j-a", 1)
    clock[0] += 3600  # an hour loading and running: compute + disk
    burn = ledger.accrue([row(7, "running")], clock[0])
    assert burn.per_hour == pytest.approx(0.40) and ledger.of_jobs(["j-a"])["j-a"] == pytest.approx(0.40)
    clock[0] += 3600  # an hour paused (stopped): the disk only
    ledger.accrue([row(7, "stopped")], clock[0])
    assert ledger.of_jobs(["j-a"])["j-a"] == pytest.approx(0.80), "the status at the last accrual stood for the hour"
    clock[0] += 1800
    assert ledger.accrue([row(7, "stopped")], clock[0]).per_hour == pytest.approx(0.04)
    assert ledger.of_jobs(["j-a"])["j-a"] == pytest.approx(0.82)
    ledger.closed(7, clock[0] + 900)  # destroyed a quarter hour later
    clock[0] += 3600
    again = SpendLedger(redis_client, "vf", clock=lambda: clock[0])  # a restarted (or new) leader
    assert again.accrue([row(7, "stopped")], clock[0]).per_hour == 0.0, "a ghost of a destroyed one is not billed"
    assert again.of_jobs(["j-a"])["j-a"] == pytest.approx(0.82 + 0.01)
    assert again.total() == pytest.approx(0.83)


def test_an_instance_first_seen_after_a_crash_bills_from_its_start(redis_client: redis.Redis) -> None:
    ledger = SpendLedger(redis_client, "vf")
    adopted = row(9, "running", label="vf:j-b:2").model_copy(update={"start_date": NOW - 1800})
    ledger.accrue([adopted], NOW)
    assert ledger.of_jobs(["j-b"])["j-b"] == pytest.approx(0.20)
    assert ledger.accrue([row(5, "running", label=None)], NOW + 10).per_hour == 0.0, "not ours: not our money"


def test_an_instance_a_listing_skipped_is_not_charged_from_its_start_again(redis_client: redis.Redis) -> None:
    """An open rental missing from one listing is charged up to then and dropped; when it shows again (a
    listing that skipped it, a zombie) it goes on from there: it was re-adopted from its start date and its
    hours were booked twice (the 8-minute chaos run's ledger over-counted by 6-13%)."""
    ledger = SpendLedger(redis_client, "vf")
    inst = row(11, "running", label="vf:j-c:1").model_copy(update={"start_date": NOW - 3600})
    ledger.accrue([inst], NOW)  # adopted: an hour from its start
    assert ledger.of_jobs(["j-c"])["j-c"] == pytest.approx(0.40)
    ledger.accrue([], NOW + 1800)  # a listing without it: charged to then
    assert ledger.of_jobs(["j-c"])["j-c"] == pytest.approx(0.60)
    ledger.accrue([inst], NOW + 3600)  # back: from where it was charged to (it ran meanwhile), not its start
    assert ledger.of_jobs(["j-c"])["j-c"] == pytest.approx(0.80)
    ledger.accrue([inst], NOW + 5400)
    assert ledger.of_jobs(["j-c"])["j-c"] == pytest.approx(1.00)


def test_the_store_reads_each_jobs_spend_into_cost(redis_client: redis.Redis) -> None:
    from vastfleet.queue import JobStore

    store = JobStore(redis_client)
    job = store.submit(make_spec())
    SpendLedger(redis_client, "vf").add(job.id, 0.00066)
    assert store.get(job.id).cost_usd == pytest.approx(0.00066)
    assert store.list()[0].cost_usd == pytest.approx(0.00066)


P = PlanParams(timings=Timings(heartbeat_lost_s=5, boot_timeout_s=30, scheduling_timeout_s=20, gone_grace_s=3))


def _pending(n: int):
    return [make_job(job_id=f"j-{i}", state=S.PENDING, instance_id=None, epoch=0,
                     spec=make_spec(interruptible="never")) for i in range(n)]


def _offers(jobs):
    offers = [make_offer(i + 1, dph_total=0.5, machine_id=100 + i) for i in range(len(jobs))]
    return {j.id: offers for j in jobs}


@pytest.mark.parametrize("params,burn,balance,binds,placed", [
    (PlanParams(max_usd_per_hour=1.2), Burn(0.2, 0, 0, 0), None, "$1.20/h", 2),
    (PlanParams(max_usd_per_day=10.0), Burn(1.0, 8.4, 8.4, 8.4), None, "a day", 1),
    (PlanParams(max_usd_per_month=100.0), Burn(0.0, 0, 100.0, 100.0), None, "a month", 0),
    (PlanParams(credit_reserve_usd=5.0), Burn(0.0, 0, 0, 0), 5.3, "reserve", 0),
    (PlanParams(credit_reserve_usd=5.0), None, 1000.0, None, 5),
])
def test_caps_hold_new_rentals_back_and_say_which_binds(params, burn, balance, binds, placed) -> None:
    jobs = _pending(5)
    snap = Snapshot(jobs={j.id: j for j in jobs}, instances=[], offers=_offers(jobs), burn=burn, balance=balance)
    budget = fleet_budget(snap, params)
    if binds is not None:
        assert binds in budget.why
    plan = decide(snap, NOW, params)
    assert len([a for a in plan.actions if getattr(a, "to", None) == S.PLACING]) == placed


def test_attempts_placed_but_not_listed_yet_count_against_the_hourly_cap() -> None:
    """Found under load: the ledger bills what the listing shows, so the pass after a placement (its create in
    flight, or made and not listed yet) saw the cap's room still free and placed again: 4 rentals at $0.68/h
    under a $0.30/h cap. Those attempts now count at their bid (or on-demand price)."""
    jobs = _pending(3)
    placed = make_job("j-placed", state=S.PLACING, instance_id=None, bid=0.25)
    booting = make_job("j-boot", state=S.BOOTING, instance_id=777, bid=None, offer_dph=0.5)
    snap = Snapshot(jobs={j.id: j for j in [*jobs, placed, booting]}, instances=[], offers=_offers(jobs),
                    burn=Burn(0.0, 0, 0, 0))
    assert fleet_budget(snap, PlanParams(max_usd_per_hour=1.2)).per_hour == pytest.approx(1.2 - 0.75)
    plan = decide(snap, NOW, PlanParams(max_usd_per_hour=0.8))
    assert not [a for a in plan.actions if getattr(a, "to", None) == S.PLACING], "0.75 in hand + 0.5: over 0.8"


def test_credit_for_less_than_an_hour_asks_every_running_job_to_checkpoint_once(redis_client: redis.Redis) -> None:
    """Below zero vast deletes every disk: with credit for less than an hour of the fleet, each running job is
    asked (once) to checkpoint now, and new rentals stop (the reserve)."""
    from tests.helpers import FakeClock
    from tests.loop.test_loop import beat, build
    from tests.market_doubles import RecordingMarketplace
    from vastfleet.queue.heartbeats import take_checkpoint_request

    market, clock = RecordingMarketplace([make_offer(1, dph_total=0.4), make_offer(2, dph_total=0.3)]), \
        FakeClock(1_000_000.0)
    store, loop = build(redis_client, market, clock)
    loop.ctx.spend = SpendLedger(redis_client, "vf", clock=clock)  # the burn the credit is measured against
    job = store.submit(make_spec(interruptible="never"))
    loop.run_pass()
    job = store.get(job.id)
    market.set_status(job.instance_id, "running")
    beat(redis_client, job, clock.now)
    loop.run_pass()
    assert store.get(job.id).state == S.RUNNING
    assert not take_checkpoint_request(redis_client, job.id, job.epoch), "plenty of credit: nothing asked"
    market.credit = 0.05
    loop._balance_at = float("-inf")  # the next pass reads the credit
    clock.now += 1
    beat(redis_client, job, clock.now)
    loop.run_pass()
    assert take_checkpoint_request(redis_client, job.id, job.epoch), "asked to checkpoint now"
    clock.now += 1
    beat(redis_client, job, clock.now)
    loop.run_pass()
    assert not take_checkpoint_request(redis_client, job.id, job.epoch), "once per low episode"
    late = store.submit(make_spec(interruptible="never"))
    clock.now += 1
    beat(redis_client, job, clock.now)
    loop.run_pass()
    assert store.get(late.id).state == S.PENDING and "credit" in store.get(late.id).reason
