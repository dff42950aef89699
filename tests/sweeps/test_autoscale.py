"""The autoscaler, a pure function: each limit binds in its turn, pruning is learned, the budget is never
projected past, an overrun stops the worst trial at its rung, and its dollars are the cost model's."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.policy.factories import make_offer
from vastfleet.scheduler.policy import FleetStats, JobView, OfferTable, PolicyParams
from vastfleet.scheduler.policy.autoscale import (
    AutoscaleParams,
    EarlyStopModel,
    MarketView,
    RunningTrial,
    SweepNow,
    TrialRecord,
    decide,
    market_view,
    prior_survival,
    remaining_share,
    survival,
    survivor_deadline,
)
from vastfleet.scheduler.policy.cost import option_terms
from vastfleet.scheduler.policy.deadline import job_costs

ASHA = EarlyStopModel("asha", min_step=100, max_step=2700, reduction_factor=3)


def market(n: int, cost: float = 1.0, hours: float = 2.0, step: float = 0.0) -> MarketView:
    return MarketView(np.array([cost + step * i for i in range(n)]), np.full(n, hours), per_work_h=cost / 2.0)


def now_state(**over: object) -> SweepNow:
    base: dict[str, object] = {"max_parallel": 4, "trials_left": 16, "work_hours": 2.0}
    base.update(over)
    return SweepNow(**base)  # type: ignore[arg-type]


def test_parallel_binds_when_all_else_is_plenty() -> None:
    s = decide(now_state(), market(20), now=0.0)
    assert (s.target, s.binding, s.admit) == (4, "parallel", 4)


def test_runnable_binds_at_the_end_and_started_trials_count_first() -> None:
    running = tuple(RunningTrial(i, step=500, placed=True, rate_usd_h=0.3) for i in range(3))
    s = decide(now_state(trials_left=0, running=running), market(20), now=0.0)
    assert (s.target, s.binding, s.admit) == (3, "runnable", 0)


def test_market_binds_on_good_value_slots_only() -> None:
    # two cheap slots, the rest more than 50% dearer: without a deadline the sweep waits for value
    m = MarketView(np.array([1.0, 1.1, 2.0, 2.2, 2.5]), np.full(5, 2.0), per_work_h=0.5)
    s = decide(now_state(), m, now=0.0)
    assert (s.target, s.binding, s.admit) == (2, "market", 2)


def test_the_deadline_raises_the_target_onto_dearer_slots() -> None:
    m = MarketView(np.array([1.0, 1.1, 2.0, 2.2, 2.5]), np.full(5, 2.0), per_work_h=0.5)
    s = decide(now_state(deadline_at=3600.0 * 10, early_stop=ASHA), m, now=0.0)  # 16 trials x ~0.2 x 2 h in 10 h
    assert s.binding == "deadline" and s.target > 2 and s.limits["deadline"] >= s.target
    passed = decide(now_state(deadline_at=100.0), m, now=200.0)
    assert (passed.admit, passed.binding) == (0, "deadline") and "passed" in passed.reason


def test_budget_admits_only_what_the_projection_affords() -> None:
    # spent 10 + running (2 trials x 2 work-h x 0.5 $/h) = 12; each new trial costs 1: 3 more fit in 15
    running = tuple(RunningTrial(i, placed=True) for i in range(2))
    s = decide(now_state(max_parallel=10, budget_usd=15.0, spent_usd=10.0, running=running, reserve_s=0.0),
               market(20), now=0.0)
    assert (s.binding, s.target, s.admit) == ("budget", 5, 3)
    assert s.projected_usd <= 15.0 + 1e-9 and math.isclose(s.running_usd, 2.0)
    # each new instance also holds back what it bills while a stop takes effect: the third no longer fits
    held = decide(now_state(max_parallel=10, budget_usd=15.0, spent_usd=10.0, running=running, reserve_s=60.0),
                  market(20), now=0.0)
    assert held.admit == 2


def test_an_overrun_stops_the_worst_trial_at_its_rung_then_the_least_advanced() -> None:
    running = (RunningTrial(0, step=900, placed=True, rank=0.1), RunningTrial(1, step=300, placed=True, rank=0.9),
               RunningTrial(2, step=50, placed=True))
    s = decide(now_state(budget_usd=11.5, spent_usd=10.0, running=running, trials_left=0), market(5), now=0.0)
    # each is expected to cost 1 more: 13 committed against 11.5. Trial 2 reached no rung (worst, least sunk),
    # then trial 1 (worst at its rung); trial 0, the best, runs on
    assert s.stop == (2, 1) and "stopping 2 running trial(s)" in s.reason
    assert s.projected_usd <= 11.5 + 1e-9


def test_with_the_budget_spent_every_running_trial_stops() -> None:
    running = tuple(RunningTrial(i, placed=True, rate_usd_h=1.0) for i in range(3))
    s = decide(now_state(budget_usd=10.0, spent_usd=9.99, burn_usd_h=3.0, reserve_s=60, running=running),
               market(5), now=0.0)
    assert sorted(s.stop) == [0, 1, 2] and s.admit == 0


def test_exhausted_when_nothing_runs_and_no_trial_fits() -> None:
    s = decide(now_state(budget_usd=10.0, spent_usd=9.5), market(5, cost=1.0), now=0.0)
    assert s.exhausted and s.admit == 0 and s.binding == "budget" and s.reason.startswith("budget:")


def test_held_instances_of_finished_trials_count_against_the_target() -> None:
    s = decide(now_state(held_elsewhere=2), market(20), now=0.0)
    assert (s.target, s.admit) == (4, 2)


def test_the_asha_prior_keeps_one_in_reduction_factor_per_rung() -> None:
    x = np.array([0.0, 100 / 2700, 101 / 2700, 301 / 2700, 901 / 2700, 1.0])
    assert prior_survival(ASHA, x).tolist() == [1.0, 1.0, 1 / 3, 1 / 9, 1 / 27, 1 / 27]
    x, s = survival(ASHA, (), AutoscaleParams())
    rungs = [100, 300, 900]
    expected = (rungs[0] + (300 - 100) / 3 + (900 - 300) / 9 + (2700 - 900) / 27) / 2700
    assert math.isclose(remaining_share(x, s, 0.0), expected, rel_tol=0.05)  # a 200-point grid


def test_pruning_is_learned_from_the_trials_finished() -> None:
    prior = remaining_share(*survival(ASHA, (), AutoscaleParams()), 0.0)
    none_pruned = tuple(TrialRecord(2700, False) for _ in range(20))
    all_early = tuple(TrialRecord(100, True) for _ in range(20))
    assert remaining_share(*survival(ASHA, none_pruned, AutoscaleParams()), 0.0) > 0.8 > prior
    assert remaining_share(*survival(ASHA, all_early, AutoscaleParams()), 0.0) < prior


def test_trial_dollars_are_the_cost_models() -> None:
    """One slot per machine's GPUs over the trial's, priced as the allocator prices a placement."""
    offers = [make_offer(dph_total=0.3 + 0.05 * i, min_bid=0.12 + 0.02 * i) for i in range(6)]
    table = OfferTable.from_offers(offers, 20.0)
    job = JobView("t", ("RTX 4090",), remaining_work_hours=1.5, ref_dlperf=44.0)
    params = PolicyParams()
    view = market_view(job, table, FleetStats(), 0.0, params, 1.5)
    t = option_terms(table, FleetStats(), params, ref_dlperf=job.reference_dlperf(), ckpt_s=60.0)
    bid, od, *_ = job_costs(job, t, table.dph, 0.0, params)
    assert np.allclose(view.cost_usd, np.sort(np.minimum(bid, od)))
    assert np.all(np.diff(view.cost_usd) >= 0) and np.all(view.hours > 1.5 / t.speed.max())


@settings(max_examples=200, deadline=None)
@given(budget=st.floats(0.5, 50), spent=st.floats(0, 40), n_run=st.integers(0, 6), left=st.integers(0, 30),
       parallel=st.integers(1, 12), costs=st.lists(st.floats(0.05, 5), min_size=0, max_size=25))
def test_never_admits_past_the_budget(budget: float, spent: float, n_run: int, left: int, parallel: int,
                                      costs: list[float]) -> None:
    running = tuple(RunningTrial(i, placed=True, rate_usd_h=0.4) for i in range(n_run))
    m = MarketView(np.sort(np.array(costs)), np.full(len(costs), 1.0), per_work_h=0.3)
    s = decide(now_state(max_parallel=parallel, trials_left=left, budget_usd=budget, spent_usd=spent,
                         running=running), m, now=0.0)
    assert s.admit <= left and s.admit + n_run - len(s.stop) <= max(parallel, n_run)
    if s.admit:
        assert s.projected_usd <= budget + 1e-9
    assert s.binding in ("budget", "parallel", "market", "runnable", "deadline")


def test_a_survivor_of_the_last_rung_is_paced_by_a_deadline() -> None:
    state = now_state(early_stop=ASHA)
    m = MarketView(np.array([1.0]), np.array([2.0]), per_work_h=0.5, wall_per_work=1.5)
    early = RunningTrial(0, step=800, started_at=1000.0)
    survivor = RunningTrial(1, step=901, started_at=1000.0)
    assert survivor_deadline(early, state, m, 300.0) is None  # rung 900 may still stop it
    due = survivor_deadline(survivor, state, m, 300.0)
    assert due == 1000.0 + (300.0 + 2.0 * 3600 * 1.5) * 1.3  # its start + 1.3 x the pace the cost model expects
    assert survivor_deadline(survivor, now_state(), m, 300.0) is None  # no early stopping: no survivors
