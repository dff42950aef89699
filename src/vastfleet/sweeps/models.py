"""The sweep records as stored and answered: the sweep, its trials, the autoscaler's last decision.

A trial's states are Optuna's end states, so users read the same words in `vastfleet sweep status` and in
optuna-dashboard: QUEUED (its job waits for an instance), RUNNING, COMPLETE, PRUNED, FAILED.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from vastfleet.spec.job import CheckpointRef
from vastfleet.sweeps.spec import SweepSpec


class SweepState(str, Enum):
    RUNNING = "RUNNING"  # trials are started, run and told
    FINISHED = "FINISHED"  # every trial it will run is over (the reason says why it stopped starting more)
    CANCELLED = "CANCELLED"  # the user cancelled it: every trial's job cancelled, instances destroyed
    FAILED = "FAILED"  # more trials failed than max_failed_trials allows

    @property
    def over(self) -> bool:
        return self != SweepState.RUNNING


class TrialState(str, Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAILED = "FAILED"

    @property
    def over(self) -> bool:
        return self in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAILED)


class Trial(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    number: int
    params: dict[str, Any] = Field(default_factory=dict)
    job_id: str | None = None
    state: TrialState = TrialState.QUEUED
    value: float | None = None  # the metric at `step` (final once COMPLETE)
    step: int | None = None
    reason: str = ""
    cost_usd: float = 0.0  # what its instances billed (the sweep's own accrual from the listings)
    started_at: float | None = None
    ended_at: float | None = None
    job_state: str | None = None  # the job's state when last seen
    checkpoint: str | None = None  # the job's latest checkpoint: "epoch E step S"


class Decision(BaseModel):
    """The autoscaler's last decision, as the driver applied it."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    at: float
    target: int
    binding: str
    admit: int
    actual: int  # the sweep's instances holding GPUs now
    expected_trial_usd: float
    expected_trial_hours: float
    running_usd: float
    projected_usd: float
    work_share: float
    reason: str
    stopped: list[int] = Field(default_factory=list)


class Sweep(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    id: str
    spec: SweepSpec
    state: SweepState = SweepState.RUNNING
    reason: str = "submitted"
    created_at: float
    updated_at: float
    ended_at: float | None = None
    deadline_at: float | None = None
    spent_usd: float = 0.0
    decision: Decision | None = None
    peak_instances: int = 0


class SweepStatus(BaseModel):
    """What `vastfleet sweep status` shows: the sweep, trials by state, spend, the binding limit, the best."""

    sweep: Sweep
    trials: dict[str, int]
    best: Trial | None = None
    trial_list: list[Trial] = Field(default_factory=list)


class BestTrial(BaseModel):
    trial: Trial
    checkpoint: CheckpointRef | None = None  # the trial job's latest committed checkpoint


class SweepEvent(BaseModel):
    id: str = ""
    at: float
    kind: str
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


def best_trials(trials: list[Trial], goal: str, k: int = 1) -> list[Trial]:
    """The k best COMPLETE trials by their final metric (ties: the earlier trial)."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    sign = 1.0 if goal == "minimize" else -1.0
    return sorted(done, key=lambda t: (sign * float(t.value or 0.0), t.number))[:k]
