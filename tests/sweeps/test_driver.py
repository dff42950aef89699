"""The sweep driver on a real redis-server: the journal survives a restart, a crash between any two steps of
starting a trial loses no trial and runs none twice, metrics reach Optuna (a re-reported step replaces the
value), pruning cancels the job, an exit without the metric fails the trial, a cancel closes everything.

The trials' jobs move through the job store as the scheduler and the agent move them (transitions and
heartbeat updates through `JobStore`); the market is the plain data the driver reads (`Observed`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import optuna
import pytest
import redis

from tests.sweeps.test_spec import ISSUE
from vastfleet.errors import Conflict
from vastfleet.queue import JobStore
from vastfleet.scheduler.policy.autoscale import MarketView
from vastfleet.spec.job import JobState
from vastfleet.sweeps import service
from vastfleet.sweeps import study as st
from vastfleet.sweeps.driver import Observed, SweepDriver
from vastfleet.sweeps.models import SweepState, Trial, TrialState
from vastfleet.sweeps.spec import SweepSpec, sweep_spec_from_dict
from vastfleet.sweeps.store import SweepStore

S = JobState


def spec(**over: Any) -> SweepSpec:
    data = {**ISSUE, "max_trials": 6, "max_parallel": 2, "budget_usd": None, "deadline": None,
            "early_stop": {"type": "none"}, **over}
    return sweep_spec_from_dict(data)


def seen(now: float = 1_000.0, slots: int = 10) -> Observed:
    view = MarketView(np.full(slots, 0.5), np.full(slots, 1.0), per_work_h=0.25)
    return Observed(now=now, market=lambda sweep, work_h: view)


@pytest.fixture
def stores(redis_client: redis.Redis) -> Iterator[tuple[JobStore, SweepStore]]:
    yield JobStore(redis_client), SweepStore(redis_client)


def run(jobs: JobStore, job_id: str, **progress: Any) -> None:
    """Place and start the job as the scheduler and the agent would, then heartbeat `progress`."""
    job = jobs.get(job_id)
    if job.state == S.PENDING:
        jobs.transition(job_id, S.PLACING, "placed")
        jobs.transition(job_id, S.BOOTING, "created", instance_id=4242)
        jobs.transition(job_id, S.RUNNING, "agent claimed")
    if progress:
        jobs.update(job_id, expected_epoch=jobs.get(job_id).epoch, progress=progress)


def finish(jobs: JobStore, job_id: str, code: int = 0) -> None:
    jobs.transition(job_id, S.SUCCEEDED if code == 0 else S.FAILED, f"command exited with {code}", exit_code=code)


def test_the_journal_replays_after_a_restart_and_a_step_reported_again_replaces(redis_client: redis.Redis) -> None:
    sp = spec()
    study = st.open_study(redis_client, "vf", "s-journal", sp, create=True)
    trial = st.ask(study, sp, 0)
    tid = st.trial_id(study, 0)
    study._storage.set_trial_intermediate_value(tid, 20, 1.0)
    study._storage.set_trial_intermediate_value(tid, 20, 0.8)  # the step again, after a resume
    # a restarted control plane: a new storage object on the same Redis
    again = st.open_study(redis_client, "vf", "s-journal", sp)
    (frozen,) = again.get_trials()
    assert frozen.params == trial.params and frozen.intermediate_values == {20: 0.8}
    again.tell(0, 0.5)
    assert st.open_study(redis_client, "vf", "s-journal", sp).best_value == 0.5


def test_the_journal_works_on_the_in_process_fake_redis_too() -> None:
    import fakeredis

    client = fakeredis.FakeRedis(decode_responses=True)
    sp = spec()
    study = st.open_study(client, "vf", "s-fake", sp, create=True)
    st.ask(study, sp, 0)
    assert len(st.open_study(client, "vf", "s-fake", sp).get_trials()) == 1


def test_samplers_are_seeded_per_trial_number_so_a_restart_does_not_repeat_proposals(redis_client: redis.Redis) -> None:
    sp = spec(method="random", seed=3)
    a = st.open_study(redis_client, "vf", "s-a", sp, create=True)
    b = st.open_study(redis_client, "vf", "s-b", sp, create=True)
    first = [st.ask(a, sp, n).params for n in range(3)]
    assert [st.ask(b, sp, n).params for n in range(3)] == first  # reproducible
    assert len({str(p) for p in first}) == 3  # and not the same point again


def test_a_crash_between_any_two_steps_of_a_start_loses_no_trial_and_runs_none_twice(
        stores: tuple[JobStore, SweepStore]) -> None:
    jobs, sweeps = stores
    sweep = service.submit(sweeps, spec(max_parallel=4))
    study = st.open_study(sweeps.redis, "vf", sweep.id, sweep.spec)
    # killed after the ask (the journal has trial 0, no record)
    st.ask(study, sweep.spec, 0)
    # killed after the record (trial 1 recorded, no job)
    ask1 = st.ask(study, sweep.spec, 1)
    sweeps.intend(sweep.id, Trial(number=1, params=dict(ask1.params), started_at=0.0))
    # killed after the submit (trial 2's job exists, the record does not name it)
    ask2 = st.ask(study, sweep.spec, 2)
    sweeps.intend(sweep.id, Trial(number=2, params=dict(ask2.params), started_at=0.0))
    orphan = jobs.submit(sweep.spec.trial_job(sweep.id, 2, dict(ask2.params)))

    SweepDriver(jobs, sweeps).drive(sweep.id, seen())  # a new driver, after the restart

    trials = sweeps.trials(sweep.id)
    assert [t.number for t in trials] == [0, 1, 2, 3]  # the three recovered, and one new up to 4 at once
    assert all(t.job_id for t in trials) and trials[2].job_id == orphan.id
    assert len(jobs.list()) == 4, "one job per trial, none twice"
    for t in trials:
        assert jobs.get(t.job_id or "").spec.run.startswith(
            f"export VASTFLEET_SWEEP_ID={sweep.id}\nexport VASTFLEET_TRIAL_NUMBER={t.number}\n")
    assert [e.kind for e in sweeps.events(sweep.id)].count("recovered") == 1


def test_metrics_reach_optuna_and_exit_0_makes_the_last_value_final(stores: tuple[JobStore, SweepStore]) -> None:
    jobs, sweeps = stores
    sweep = service.submit(sweeps, spec(max_trials=2))
    driver = SweepDriver(jobs, sweeps)
    driver.drive(sweep.id, seen())
    first, second = sweeps.trials(sweep.id)
    run(jobs, first.job_id or "", step=10, val_loss=0.9)
    run(jobs, second.job_id or "", step=10, loss=0.3)  # reports something else than the metric
    driver.drive(sweep.id, seen())
    jobs.update(first.job_id or "", expected_epoch=jobs.get(first.job_id or "").epoch, progress={"step": 10,
                                                                                                 "val_loss": 0.7})
    driver.drive(sweep.id, seen())
    frozen = {t.number: t for t in st.open_study(sweeps.redis, "vf", sweep.id, sweep.spec).get_trials()}
    assert frozen[first.number].intermediate_values == {10: 0.7}  # the step again replaced its value
    run(jobs, first.job_id or "", step=20, val_loss=0.42)
    finish(jobs, first.job_id or "")
    finish(jobs, second.job_id or "")
    driver.drive(sweep.id, seen())
    done = {t.number: t for t in sweeps.trials(sweep.id)}
    assert done[first.number].state == TrialState.COMPLETE and done[first.number].value == 0.42
    assert done[second.number].state == TrialState.FAILED
    assert "never reported the metric 'val_loss'" in done[second.number].reason and "loss, step" in done[second.number].reason
    frozen = {t.number: t for t in st.open_study(sweeps.redis, "vf", sweep.id, sweep.spec).get_trials()}
    assert frozen[first.number].value == 0.42 and frozen[second.number].state == optuna.trial.TrialState.FAIL
    assert frozen[second.number].user_attrs["vastfleet_reason"].startswith("exited 0 but never reported")
    assert sweeps.get(sweep.id).state == SweepState.FINISHED


def test_pruning_cancels_the_job_with_reason_pruned_for_teardown_at_once(stores: tuple[JobStore, SweepStore]) -> None:
    jobs, sweeps = stores
    sweep = service.submit(sweeps, spec(max_trials=4, max_parallel=4, early_stop={
        "type": "asha", "min_step": 10, "max_step": 90, "reduction_factor": 3}))
    driver = SweepDriver(jobs, sweeps)
    driver.drive(sweep.id, seen())
    trials = sweeps.trials(sweep.id)
    for i, t in enumerate(trials):  # trial 0 is the best at rung 10; the others worse
        run(jobs, t.job_id or "", step=10, val_loss=0.1 + i)
        driver.drive(sweep.id, seen())
    pruned = [t for t in sweeps.trials(sweep.id) if t.state == TrialState.PRUNED]
    assert pruned, "ASHA keeps 1 in 3 at the first rung"
    for t in pruned:
        job = jobs.get(t.job_id or "")
        assert (job.state, job.reason, job.force, job.cancel_requested) == (S.CANCELLED, "pruned", True, True)
    assert trials[0].number not in {t.number for t in pruned}


def test_cancel_closes_every_trial_and_the_sweep_leaves_the_driver(stores: tuple[JobStore, SweepStore]) -> None:
    jobs, sweeps = stores
    sweep = service.submit(sweeps, spec())
    driver = SweepDriver(jobs, sweeps)
    driver.drive(sweep.id, seen())
    first = sweeps.trials(sweep.id)[0]
    run(jobs, first.job_id or "", step=3, val_loss=1.0)
    service.cancel(jobs, sweeps, sweep.id)
    assert all(jobs.get(t.job_id or "").state == S.CANCELLED for t in sweeps.trials(sweep.id))
    driver.drive(sweep.id, seen())
    assert all(t.state == TrialState.FAILED for t in sweeps.trials(sweep.id))
    assert sweep.id not in sweeps.open_ids()
    with pytest.raises(Conflict, match="already CANCELLED"):
        service.cancel(jobs, sweeps, sweep.id)


def test_a_survivor_gets_the_pace_deadline_on_its_job(stores: tuple[JobStore, SweepStore]) -> None:
    jobs, sweeps = stores
    sweep = service.submit(sweeps, spec(max_trials=1, max_parallel=1, early_stop={
        "type": "asha", "min_step": 10, "max_step": 90, "reduction_factor": 3}))
    driver = SweepDriver(jobs, sweeps)
    driver.drive(sweep.id, seen())
    (trial,) = sweeps.trials(sweep.id)
    run(jobs, trial.job_id or "", step=20, val_loss=0.5)
    driver.drive(sweep.id, seen())
    assert jobs.get(trial.job_id or "").deadline_at is None  # rung 30 may still stop it
    run(jobs, trial.job_id or "", step=31, val_loss=0.4)
    driver.drive(sweep.id, seen())
    due = jobs.get(trial.job_id or "").deadline_at
    assert due is not None and due > (trial.started_at or 0.0)
    assert any(e.kind == "paced" for e in sweeps.events(sweep.id))


def test_more_failures_than_allowed_end_the_sweep_failed(stores: tuple[JobStore, SweepStore]) -> None:
    jobs, sweeps = stores
    sweep = service.submit(sweeps, spec(max_trials=4, max_parallel=3, max_failed_trials=1))
    driver = SweepDriver(jobs, sweeps)
    driver.drive(sweep.id, seen())
    first, second, third = sweeps.trials(sweep.id)
    for t in (first, second):
        run(jobs, t.job_id or "", step=1, val_loss=1.0)
        finish(jobs, t.job_id or "", code=3)
    driver.drive(sweep.id, seen())
    done = sweeps.get(sweep.id)
    assert done.state == SweepState.FAILED and "2 trials failed, more than max_failed_trials 1" in done.reason
    assert jobs.get(third.job_id or "").state == S.CANCELLED  # the rest is not paid for
    assert [t.state for t in sweeps.trials(sweep.id)] == [TrialState.FAILED] * 3
    assert sweep.id not in sweeps.open_ids()
