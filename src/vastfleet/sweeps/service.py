"""What the API (and the demo) do with sweeps: submit, status, best, cancel, and the journal for a remote
optuna-dashboard. Thin over `SweepStore`, the job store and the study; no decisions (the driver's).
"""

from __future__ import annotations

import json
from typing import Any

from vastfleet.errors import Conflict, IllegalTransition, NotFound
from vastfleet.queue import JobStore
from vastfleet.sweeps import study as st
from vastfleet.sweeps.models import BestTrial, Sweep, SweepState, SweepStatus, TrialState, best_trials
from vastfleet.sweeps.spec import SweepSpec
from vastfleet.sweeps.store import SweepStore

MAX_JOURNAL_PAGE = 5000


def submit(sweeps: SweepStore, spec: SweepSpec) -> Sweep:
    """Record the sweep and create its study in the journal; the driver starts its trials."""
    sweep = sweeps.create(spec)
    st.open_study(sweeps.redis, sweeps.prefix, sweep.id, spec, create=True)
    return sweep


def status(sweeps: SweepStore, sweep_id: str, with_trials: bool = True) -> SweepStatus:
    sweep = sweeps.get(sweep_id)
    trials = sweeps.trials(sweep_id)
    counts = {s.value: 0 for s in TrialState}
    for t in trials:
        counts[t.state.value] += 1
    best = best_trials(trials, sweep.spec.metric.goal.value, 1)
    return SweepStatus(sweep=sweep, trials=counts, best=best[0] if best else None,
                       trial_list=trials if with_trials else [])


def best(jobs: JobStore, sweeps: SweepStore, sweep_id: str, k: int = 5) -> list[BestTrial]:
    sweep = sweeps.get(sweep_id)
    out = []
    for trial in best_trials(sweeps.trials(sweep_id), sweep.spec.metric.goal.value, k):
        ref = None
        if trial.job_id is not None:
            try:
                ref = jobs.get(trial.job_id).latest_checkpoint
            except NotFound:
                ref = None
        out.append(BestTrial(trial=trial, checkpoint=ref))
    return out


def cancel(jobs: JobStore, sweeps: SweepStore, sweep_id: str) -> Sweep:
    """End the sweep now and cancel every trial's job (teardown destroys their instances once their last
    checkpoints are off-box; the checkpoints stay). The driver tells Optuna at its next pass, and cancels a
    trial it was starting at this very moment."""
    if not sweeps.end(sweep_id, SweepState.CANCELLED, "cancelled by user"):
        state = sweeps.get(sweep_id).state
        raise Conflict(f"sweep {sweep_id} is already {state.value}; there is nothing to cancel")
    for trial in sweeps.trials(sweep_id):
        if trial.job_id is None or trial.state.over:
            continue
        try:
            jobs.cancel(trial.job_id, "sweep cancelled")
        except (IllegalTransition, NotFound):
            continue
    sweeps.redis.sadd(sweeps.open_set, sweep_id)  # the driver closes the trials
    return sweeps.get(sweep_id)


def journal(sweeps: SweepStore, sweep_id: str, after: int = -1, limit: int = MAX_JOURNAL_PAGE) -> dict[str, Any]:
    """The study's journal records after `after` (a record number), for an optuna-dashboard run elsewhere."""
    sweeps.get(sweep_id)
    prefix = st.journal_prefix(sweeps.prefix, sweep_id)
    last = sweeps.redis.get(f"{prefix}:log_number")
    last_n = -1 if last is None else int(last)
    first = after + 1
    upto = min(last_n, first + limit - 1)
    keys = [f"{prefix}:log:{n}" for n in range(first, upto + 1)]
    records: list[Any] = []
    if keys:
        for text in sweeps.redis.mget(keys):
            if text is None:
                break  # a record being written right now: the next page has it
            records.append(json.loads(text))
    return {"records": records, "next": first + len(records) - 1, "last": last_n}
