"""The sweep gauges, read from a real redis-server at scrape time: labelled by sweep, never by trial."""

from __future__ import annotations

import redis
from prometheus_client import generate_latest

from tests.sweeps.test_driver import finish, run, seen, spec
from vastfleet.metrics import FleetMetrics
from vastfleet.queue import JobStore
from vastfleet.sweeps import service
from vastfleet.sweeps.driver import SweepDriver
from vastfleet.sweeps.store import SweepStore


def test_the_sweep_gauges_follow_the_sweep(redis_client: redis.Redis) -> None:
    jobs, sweeps = JobStore(redis_client), SweepStore(redis_client)
    sweep = service.submit(sweeps, spec(max_trials=2, max_parallel=2, budget_usd=10))
    driver = SweepDriver(jobs, sweeps)
    driver.drive(sweep.id, seen())
    first, second = sweeps.trials(sweep.id)
    run(jobs, first.job_id or "", step=5, val_loss=0.25)
    finish(jobs, first.job_id or "")
    driver.drive(sweep.id, seen())
    metrics = FleetMetrics()
    metrics.attach_store(jobs)  # the job store's collector and the sweeps' one, on the same Redis

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"sweep": sweep.id, **labels})

    assert value("vastfleet_sweep_trials", state="COMPLETE") == 1
    assert value("vastfleet_sweep_trials", state="QUEUED") == 1
    assert value("vastfleet_sweep_best_value") == 0.25
    assert value("vastfleet_sweep_budget_dollars") == 10
    assert value("vastfleet_sweep_target_instances") == 1  # one trial left, running
    assert value("vastfleet_sweep_binding_limit", limit="runnable") == 1
    assert value("vastfleet_sweep_trial_cost_dollars_count", outcome="complete") == 1
    assert value("vastfleet_sweep_state", state="RUNNING") == 1
    text = generate_latest(metrics.registry).decode()
    assert str(first.job_id) not in text and str(second.job_id) not in text  # no job (or trial) is ever a label
    assert 'trial="' not in text and 'job="' not in text
    service.cancel(jobs, sweeps, sweep.id)
    assert value("vastfleet_sweep_state", state="CANCELLED") == 1 and value("vastfleet_sweep_target_instances") == 0
