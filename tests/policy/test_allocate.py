"""The allocator: one pass, no offer bought twice, urgent jobs first; the live entry points' shapes."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.policy.factories import make_job, make_offer
from vastfleet.scheduler.policy import FleetStats, PolicyParams, decide_placements, job_view_from_job
from vastfleet.spec import Job, JobSpec

P = PolicyParams()


@settings(max_examples=40, deadline=None)
@given(n_jobs=st.integers(1, 12), n_offers=st.integers(0, 10), seed=st.integers(0, 1000))
def test_no_offer_is_bought_twice(n_jobs, n_offers, seed):
    rng = np.random.default_rng(seed)
    offers = [make_offer(dlperf=float(rng.uniform(20, 60)), min_bid=float(rng.uniform(0.05, 0.3)),
                         dph_total=float(rng.uniform(0.3, 0.8))) for _ in range(n_offers)]
    jobs = [make_job(job_id=f"j{i}", remaining_work_hours=float(rng.uniform(1, 30)),
                     deadline_at=float(rng.uniform(40, 200) * 3600) if i % 2 else None) for i in range(n_jobs)]
    pls = decide_placements(jobs, offers, FleetStats(), 0.0, P)
    ids = [p.offer_id for p in pls]
    assert len(ids) == len(set(ids))
    assert len(pls) <= min(n_jobs, n_offers)
    assert len({p.job_id for p in pls}) == len(pls)
    for p in pls:
        assert p.expected_cost > 0 and p.reason and p.terms["kind"] == p.kind
        assert (p.bid is None) == (p.kind == "on_demand")


def test_most_urgent_job_gets_the_single_best_offer():
    best = make_offer(dlperf=60.0, min_bid=0.1)
    other = make_offer(dlperf=30.0, min_bid=0.12)
    relaxed = make_job(job_id="relaxed", deadline_at=500 * 3600.0)
    urgent = make_job(job_id="urgent", deadline_at=30 * 3600.0)
    pls = {p.job_id: p.offer_id for p in decide_placements([relaxed, urgent], [best, other], FleetStats(), 0.0, P)}
    assert pls["urgent"] == best.id and pls["relaxed"] == other.id


def test_thousand_jobs_over_many_offers_each_get_their_own():
    """(Its speed is bench/placement.py's figure: tests assert no wall-clock times.)"""
    rng = np.random.default_rng(1)
    names = ["RTX 4090", "RTX 3090", "A100 SXM4"]
    offers = [make_offer(gpu_name=names[i % 3], dlperf=float(rng.uniform(20, 80)), min_bid=float(rng.uniform(.05, .3)))
              for i in range(3000)]
    jobs = [make_job(job_id=f"j{i}", gpu_names=(names[i % 3],), remaining_work_hours=float(1 + i % 24))
            for i in range(1000)]
    pls = decide_placements(jobs, offers, FleetStats(), 0.0, P)
    assert len(pls) == 1000 and len({p.offer_id for p in pls}) == 1000


def test_job_view_from_a_stored_job():
    spec = JobSpec.model_validate({"name": "t", "image": "img", "run": "python x.py", "deadline": "12h",
                                   "resources": {"gpu": ["RTX_4090"], "gpus": 2, "max_price_per_hour": 1.5}})
    job = Job(id="a", spec=spec, submitted_at=100.0, updated_at=100.0, deadline_at=100.0 + 12 * 3600,
              progress={"total_hours": 8.0, "fraction": 0.25})
    v = job_view_from_job(job, 200.0, interruption_times=(150.0,))
    assert v.gpu_names == ("RTX 4090",) and v.num_gpus == 2 and v.max_price_per_hour == 1.5
    assert v.remaining_work_hours == 6.0 and v.deadline_at == 100.0 + 12 * 3600 and v.interruptions == 1
    assert v.reference_dlperf() == 88.0


@settings(max_examples=200, deadline=None)
@given(progress=st.dictionaries(
    st.sampled_from(["remaining_hours", "fraction", "total_hours", "step", "of", "total"]),
    st.one_of(st.none(), st.booleans(), st.text(max_size=8), st.floats(allow_nan=True, allow_infinity=True),
              st.integers(-10, 10**6), st.lists(st.integers(), max_size=2))))
def test_whatever_a_job_reports_as_progress_its_view_has_a_finite_remaining_work(progress):
    """A job's progress file is its own (NaN arrives as null, a string, a list): the view never raises and
    its remaining work is finite and positive, or one job's file would stop every pass."""
    spec = JobSpec.model_validate({"name": "p", "image": "x", "run": "y", "work_hours": 10.0,
                                   "resources": {"gpu": ["RTX_4090"]}})
    v = job_view_from_job(Job(id="p", spec=spec, submitted_at=0.0, updated_at=0.0, progress=progress), 10.0)
    assert 0 < v.remaining_work_hours < float("inf")


def test_step_of_progress_counts_as_the_share_done():
    spec = JobSpec.model_validate({"name": "p", "image": "x", "run": "y", "work_hours": 10.0,
                                   "resources": {"gpu": ["RTX_4090"]}})
    view = job_view_from_job(Job(id="p", spec=spec, submitted_at=0.0, updated_at=0.0,
                                 progress={"step": 30, "of": 60}), 10.0)
    assert view.remaining_work_hours == 5.0
    bad = job_view_from_job(Job(id="p", spec=spec, submitted_at=0.0, updated_at=0.0,
                                progress={"remaining_hours": None, "fraction": "half", "step": 3, "of": 0}), 10.0)
    assert bad.remaining_work_hours == 10.0


def test_the_final_on_demand_run_goes_to_an_offer_that_finishes_in_time():
    slow = make_offer(dlperf=22.0, dph_total=0.30)  # cheapest per work-hour, but half speed
    fast = make_offer(dlperf=44.0, dph_total=0.70)
    job = make_job(remaining_work_hours=4.0, interruptible="never", deadline_at=5 * 3600.0)
    placed = decide_placements([job], [slow, fast], FleetStats(), 0.0, PolicyParams())
    assert [(p.offer_id, p.kind) for p in placed] == [(fast.id, "on_demand")]
    roomy = make_job(remaining_work_hours=4.0, interruptible="never", deadline_at=20 * 3600.0)
    placed = decide_placements([roomy], [slow, fast], FleetStats(), 0.0, PolicyParams())
    assert [p.offer_id for p in placed] == [slow.id]
