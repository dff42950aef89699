"""Reading trials off their jobs: the metric and step in the heartbeats' progress, a trial's rank at its
rung, and finding a trial's job again after a crash between its submit and its record.
"""

from __future__ import annotations

import math
from typing import Any

import optuna

from vastfleet.queue import JobStore
from vastfleet.scheduler.policy.autoscale import EarlyStopModel
from vastfleet.spec.job import Job, JobState
from vastfleet.sweeps.models import TrialState

# how far back the recovery scan looks through the job store, in jobs
RECOVERY_SCAN = 5000


def number(value: Any) -> float | None:
    """A finite number from the progress file (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def step_of(progress: dict[str, Any]) -> int | None:
    value = number(progress.get("step"))
    return None if value is None or value < 0 else int(value)


def metric_of(progress: dict[str, Any], name: str) -> float | None:
    return number(progress.get(name))


def trial_state(job: Job) -> TrialState:
    """The trial's state while its job lives: QUEUED until an agent first runs it, RUNNING after (a paused
    or re-queued attempt of a trial that already ran stays RUNNING: it is the same trial)."""
    if job.state in (JobState.RUNNING, JobState.PAUSED) or job.preemptions > 0 or job.progress:
        return TrialState.RUNNING
    return TrialState.QUEUED


def rung_step(step: int, stop: EarlyStopModel) -> int:
    """The rung a trial at `step` has reached: ASHA's min_step * rf^k at or below it; else the step itself."""
    if stop.type != "asha" or not stop.min_step or step < stop.min_step:
        return step
    rung = stop.min_step
    while rung * stop.reduction_factor <= step:
        rung *= stop.reduction_factor
    return rung


def value_at(trial: optuna.trial.FrozenTrial, at: int) -> float | None:
    """The trial's value at the first step it reported at or past `at`."""
    steps = sorted(s for s in trial.intermediate_values if s >= at)
    return float(trial.intermediate_values[steps[0]]) if steps else None


def rank(trials: list[optuna.trial.FrozenTrial], me: optuna.trial.FrozenTrial, stop: EarlyStopModel,
         minimize: bool) -> float | None:
    """0 (best) .. 1 (worst): the share of the other trials that reached this trial's rung with a better value
    there; None before any rung or when no other trial got there."""
    if not me.intermediate_values:
        return None
    last = max(me.intermediate_values)
    rung = rung_step(last, stop)
    if stop.type == "asha" and stop.min_step and last < stop.min_step:
        return None
    mine = value_at(me, rung)
    if mine is None:
        return None
    others = [v for t in trials if t.number != me.number and (v := value_at(t, rung)) is not None]
    if not others:
        return None
    better = sum(1 for v in others if (v < mine if minimize else v > mine))
    return better / len(others)


def find_job(store: JobStore, sweep_id: str, number_: int, since: float) -> Job | None:
    """The job submitted for trial `number_` of the sweep, if any: its command starts with the trial's exports
    (`VASTFLEET_SWEEP_ID`, `VASTFLEET_TRIAL_NUMBER`). Used only when the driver died between a submit and
    the record of it; scans the job store's most recent jobs back to `since`."""
    marker = f"export VASTFLEET_SWEEP_ID={sweep_id}\nexport VASTFLEET_TRIAL_NUMBER={number_}\n"
    before: str | None = None
    seen = 0
    while seen < RECOVERY_SCAN:
        page = store.list(limit=500, before=before)
        if not page:
            return None
        for job in reversed(page):
            if job.spec.run.startswith(marker):
                return job
        seen += len(page)
        if page[0].submitted_at < since - 1.0:
            return None
        before = page[0].id
    return None
