"""The workload bound: offer capacity priced in; a true lower bound that never falls below the per-job sum."""

from __future__ import annotations

import pytest

from tests.policy.test_replay import market_of, small
from vastfleet.sim.replay import Options, Replay, WorkJob, make_policy, optimum
from vastfleet.sim.replay.joint import workload_bound


def two_jobs_one_cheap_offer(capacity: int = 1):
    events = [{"t": 0, "type": "offer", "id": "cheap", "host": 1, "gpu_name": "RTX 4090", "dph_total": 1.0,
               "min_bid": 0.1, "dlperf": 44.0, "capacity": capacity},
              {"t": 0, "type": "offer", "id": "dear", "host": 2, "gpu_name": "RTX 4090", "dph_total": 1.0,
               "min_bid": 0.3, "dlperf": 44.0, "capacity": capacity}]
    m = market_of(events, 600, horizon=600 * 5)
    jobs = [WorkJob(f"j{i}", 0.0, 0.5, 44.0, ("RTX 4090",), 1, 3000.0) for i in range(2)]
    return m, jobs


def test_two_jobs_cannot_both_have_the_cheap_offer():
    # each job needs 600 s of boot and 1800 s of work: 4 of the 5 ticks, so they cannot take turns on the
    # cheap offer. The true optimum puts one on each: 4 ticks at $0.1/h and 4 at $0.3/h.
    m, jobs = two_jobs_one_cheap_offer()
    opts = Options(restart_overhead_s=600.0, resume_overhead_s=120.0)
    per_job = optimum(m, jobs, opts)
    whole = workload_bound(m, jobs, opts, per_job)
    exact = (0.1 + 0.3) * 2400 / 3600
    assert whole.per_job_sum == pytest.approx(2 * 0.1 * 2400 / 3600, rel=1e-3)
    assert whole.method != "per-job" and whole.contended_cells > 0
    assert whole.per_job_sum * 1.5 < whole.dollars <= exact + 1e-9
    assert sum(whole.shares.values()) == pytest.approx(whole.dollars)


def test_with_room_for_every_job_the_bound_is_the_per_job_sum():
    m, jobs = two_jobs_one_cheap_offer(capacity=2)
    opts = Options(restart_overhead_s=600.0, resume_overhead_s=120.0)
    per_job = optimum(m, jobs, opts)
    whole = workload_bound(m, jobs, opts, per_job)
    assert whole.method == "per-job" and whole.contended_cells == 0
    assert whole.dollars == pytest.approx(whole.per_job_sum)


@pytest.mark.parametrize("seed,vol", [(1, "low"), (2, "mid"), (3, "high"), (4, "mid")])
def test_no_policy_pays_less_than_the_bounds(seed, vol):
    m, jobs = small(seed, vol)
    opts = Options()
    per_job = optimum(m, jobs, opts)
    whole = workload_bound(m, jobs, opts, per_job)
    assert whole.dollars >= whole.per_job_sum - 1e-9
    for name in ("greedy_spot", "ours", "on_demand"):
        runs = Replay(m, jobs, opts).run(make_policy(name))
        on_time = all(r.done_at is not None and r.done_at <= r.job.deadline_at + 1e-6 for r in runs.values())
        if not on_time:
            continue
        assert sum(r.dollars for r in runs.values()) >= whole.dollars - 1e-9, name
        for j in jobs:
            assert runs[j.id].dollars >= per_job[j.id].dollars - 1e-9, (name, j.id)
