"""A job in a listing: what a status table shows, bounded in size whatever the job holds; and a
quarantined job as its listing shows it (`vastfleet.queue.quarantine`).

Why a summary and not the job: a listing of a thousand jobs with their full specs was 115 MB once (each
spec may carry its env and commands), and every caller of a listing wants the same dozen fields. The full
record stays one request away (`GET /v1/jobs/{id}`). Reason and progress are cut to a fixed size here.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from vastfleet.spec.job import Job, JobEvent, JobState

MAX_REASON_CHARS = 200
MAX_PROGRESS_BYTES = 512  # of compact JSON; a heartbeat's progress may be up to 4 KiB
_MAX_PROGRESS_TEXT = 80


class JobSummary(BaseModel):
    id: str
    name: str
    state: JobState
    epoch: int
    priority: int
    submitted_at: float
    updated_at: float
    instance_id: int | None = None
    bid: float | None = None
    preemptions: int = 0
    cost_usd: float = 0.0
    reason: str = Field("", description=f"why the job is in its state, cut to {MAX_REASON_CHARS} characters")
    progress: dict[str, Any] = Field(default_factory=dict,
                                     description=f"the last progress, cut to {MAX_PROGRESS_BYTES} bytes of JSON")
    progress_truncated: bool = False

    @classmethod
    def of(cls, job: Job) -> JobSummary:
        progress, truncated = _bounded_progress(job.progress)
        reason = job.reason if len(job.reason) <= MAX_REASON_CHARS else job.reason[: MAX_REASON_CHARS - 3] + "..."
        return cls(id=job.id, name=job.spec.name, state=job.state, epoch=job.epoch, priority=job.spec.priority,
                   submitted_at=job.submitted_at, updated_at=job.updated_at, instance_id=job.instance_id,
                   bid=job.bid, preemptions=job.preemptions, cost_usd=job.cost_usd, reason=reason,
                   progress=progress, progress_truncated=truncated)


def _bounded_progress(progress: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The progress entries that fit, in order: numbers, booleans and short texts (a status column's
    step, loss, epoch); nested values and long texts are left out and flagged."""
    out: dict[str, Any] = {}
    size = 2
    truncated = False
    for key, value in progress.items():
        if not (value is None or isinstance(value, (int, float, bool))
                or (isinstance(value, str) and len(value) <= _MAX_PROGRESS_TEXT)):
            truncated = True
            continue
        item = len(json.dumps(key)) + len(json.dumps(value)) + 2
        if size + item > MAX_PROGRESS_BYTES:
            truncated = True
            continue
        out[key] = value
        size += item
    return out, truncated


class QuarantineEntry(BaseModel):
    """A job whose record no longer decodes, set aside: why and when."""

    id: str
    reason: str
    quarantined_at: float
    submitted_at: float | None = None
    state: str | None = None  # the raw state text of the record, when it has one
    epoch: str | None = None  # raw too: the record is the one thing here that may not make sense


class QuarantineDetail(QuarantineEntry):
    fields: dict[str, str]  # the record's hash, field by field, as stored
    events: list[JobEvent]  # the job's last events, the quarantine's own last
