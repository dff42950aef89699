"""The teardown rule: may this instance of ours be destroyed now? Pure; time is an argument.

The rule (DESIGN.md): no `destroy` while the job's latest checkpoint is not verified off-box, unless the
job has none (`checkpoint.required: false`) or the user forced it (`Job.force`). What "verified off-box"
means here, precisely:

* A checkpoint is off-box once the control plane COMMITTED it (`Job.latest_checkpoint`): the store
  confirmed every object's size and sha256 before the commit. The agent uploads continuously, so the only
  checkpoints that can be missing are those the agent wrote but has not committed yet.
* A live attempt (healthy or booting, job not terminal) is never destroyed by teardown: no rule asks for it.
* A finished job (SUCCEEDED, or FAILED on the agent's exit report) : the agent uploads and commits its last
  checkpoint BEFORE it reports the exit code, so an exit report means nothing is left on the box.
* A job that ended without an exit report (CANCELLED, FAILED by the preemption cap): wait while the agent
  of that attempt still heartbeats and does not say `pending_uploads == 0`; once it says 0, or falls silent
  (its beat is older than the heartbeat-lost bound, so nothing more can arrive), the committed checkpoint
  is all there is and the instance goes.
* An orphan (a stale epoch, an unknown job, a duplicate of the attempt, or an attempt the recovery already
  moved off): the epoch fence means nothing it holds can ever be committed (the API refuses a stale
  epoch's writes and tells it to stop), so the job's committed checkpoint is, by construction, the newest
  verified one. For an interrupted attempt (paused by a higher bid, host offline, heartbeat lost) whose disk
  may still exist we cannot know what it has not uploaded: the recovery decision accepts the committed
  checkpoint, and the destroy follows that decision (the instance is an orphan from then on). Salvage by a
  cloud copy of a stopped disk is not done yet (see docs/scheduler.md).

Never performs the destroy; `plan` emits it and the action re-checks ownership by label.
"""

from __future__ import annotations

from dataclasses import dataclass

from vastfleet.scheduler.supervise import Beat, Health, Timings, Verdict
from vastfleet.spec.job import Job, JobState


@dataclass(frozen=True)
class Gate:
    allowed: bool
    reason: str


def may_destroy(verdict: Verdict, job: Job | None, beat: Beat | None, now: float,
                timings: Timings | None = None) -> Gate:
    timings = timings or Timings()
    if verdict.health == Health.orphan:
        return Gate(True, f"orphan: {verdict.reason}")
    if verdict.health != Health.dead:
        return Gate(False, f"the attempt is {verdict.health.value}: teardown never destroys a live attempt")
    assert job is not None, "a dead verdict names its job"
    if job.force:
        return Gate(True, "the user forced it")
    if not job.spec.checkpoint.required:
        return Gate(True, "the job keeps no checkpoints")
    if job.state in (JobState.SUCCEEDED, JobState.FAILED) and job.exit_code is not None:
        return Gate(True, f"the agent reported exit {job.exit_code} after its final upload")
    current = beat if beat is not None and beat.epoch == job.epoch else None
    if current is None:
        return Gate(True, "no heartbeat of this attempt: nothing more can be uploaded")
    if current.pending_uploads == 0:
        return Gate(True, "the agent reports no un-uploaded checkpoint")
    age = now - current.at
    if age > timings.heartbeat_lost_s:
        return Gate(True, f"the agent fell silent {age:.0f}s ago: the committed checkpoint is the last")
    return Gate(False, "the agent may still hold un-uploaded checkpoints (waiting for its final upload)")
