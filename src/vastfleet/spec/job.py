"""The job record as the queue stores it, its states, and the events of its history.

The allowed transitions live with the state machine in `vastfleet.queue.machine`; this module only names
the states so that every part speaks the same words.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from vastfleet.spec.jobspec import JobSpec


class JobState(str, Enum):
    PENDING = "PENDING"  # queued, waiting for an offer
    PLACING = "PLACING"  # an offer is chosen and an instance is being created
    BOOTING = "BOOTING"  # the instance exists; waiting for the agent's first heartbeat
    RUNNING = "RUNNING"  # the agent heartbeats and the command runs
    PAUSED = "PAUSED"  # the marketplace paused the attempt (outbid, stopped) and its agent fell silent: waiting,
    #                    raising the bid or moving; back to RUNNING when it resumes
    INTERRUPTED = "INTERRUPTED"  # preempted, host lost or stuck; will be re-queued from the last checkpoint
    SUCCEEDED = "SUCCEEDED"  # the command exited 0 (terminal)
    FAILED = "FAILED"  # the command failed and retries are spent, or preemptions passed their cap (terminal)
    CANCELLED = "CANCELLED"  # the user cancelled it (terminal)

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE_STATES = frozenset({JobState.PLACING, JobState.BOOTING, JobState.RUNNING, JobState.PAUSED})
# the states in which an attempt holds (or waits for) an instance of its own
ATTEMPT_STATES = frozenset({JobState.BOOTING, JobState.RUNNING, JobState.PAUSED})


class CheckpointRef(BaseModel):
    """A committed, verified checkpoint: where its objects live and what they hold."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    epoch: int
    step: int | None = None
    prefix: str  # the storage key prefix holding the files
    files: dict[str, dict[str, Any]]  # relative path -> {"size": int, "sha256": str}
    committed_at: float
    bytes: int = 0


class Job(BaseModel):
    """A job as stored in Redis. `state` and `epoch` change only through the state machine. Non-finite numbers
    are refused: they would be stored as null and the record would no longer decode."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    id: str
    spec: JobSpec
    state: JobState = JobState.PENDING
    epoch: int = 0  # the attempt; bumped on every PENDING -> PLACING
    submitted_at: float
    updated_at: float
    deadline_at: float | None = None
    reason: str = ""  # why the job is in its state
    instance_id: int | None = None  # the marketplace instance of the current epoch
    offer_id: int | None = None
    bid: float | None = None  # $/h bid of the current epoch; None = on demand
    machine_id: int | None = None  # the machine of the current attempt's offer (known before it is listed)
    offer_dph: float | None = None  # the offer's on-demand $/h at placement: no bid of this attempt goes above it
    offer_cpus: float | None = None  # the offer's effective CPU cores: what the agent gives Ray (runtime: ray)
    expected_cost_usd: float | None = None  # what the placement expected the rest of the job to cost
    paused_at: float | None = None  # when the attempt was last seen paused (PAUSED)
    rebids: int = 0  # bid raises of this attempt (each waits longer than the last; capped)
    rebid_at: float | None = None  # when the bid was last raised
    fruitless: int = 0  # attempts in a row that ended without new progress (no checkpoint committed)
    interrupted_at: list[float] = Field(default_factory=list)  # when its last attempts were lost (the last 20)
    pinned_on_demand: bool = False  # the policy moved it to on demand for its deadline: there to the end
    moving_since: float | None = None  # the policy moves this attempt: a checkpoint was asked for at this time
    moving: str = ""  # why it moves (a cheaper offer, on demand for the deadline, back to bids)
    preemptions: int = 0
    errors: int = 0  # failed runs, against retries_on_error
    progress: dict[str, Any] = Field(default_factory=dict)  # last heartbeat's progress
    latest_checkpoint: CheckpointRef | None = None
    # the last few verified checkpoints, oldest first (the last one is `latest_checkpoint`): a restore that
    # finds the newest one damaged falls back to the one before instead of failing every new attempt
    checkpoint_history: list[CheckpointRef] = Field(default_factory=list)
    cost_usd: float = 0.0  # spend attributed to the job so far
    exit_code: int | None = None
    cancel_requested: bool = False
    force: bool = False  # destroy without a verified checkpoint (user's explicit choice)


class JobEvent(BaseModel):
    """One entry of a job's event stream: a transition, or a note (heartbeat lost, checkpoint committed)."""

    id: str = ""  # the Redis stream id
    job_id: str
    at: float
    kind: str  # "transition" or a note kind
    from_state: JobState | None = None
    to_state: JobState | None = None
    epoch: int
    reason: str = ""
    data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_stream(cls, event_id: str, f: dict[str, str]) -> JobEvent:
        """An entry as the job store writes it to its Redis stream (strings; `data` as JSON)."""
        return cls(
            id=event_id, job_id=f["job_id"], at=float(f["at"]), kind=f["kind"],
            from_state=JobState(f["from_state"]) if f.get("from_state") else None,
            to_state=JobState(f["to_state"]) if f.get("to_state") else None,
            epoch=int(f["epoch"]), reason=f.get("reason", ""), data=json.loads(f.get("data") or "{}"),
        )
