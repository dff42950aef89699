"""The Redis key names of the job store, in one place so that no other module spells a key by hand.

Layout under a prefix (default `vf`):

    {p}:job:{id}          hash     one job record; every field holds the JSON text of one `Job` attribute
    {p}:jobs              zset     every job id, scored by submit time (the `list` order)
    {p}:state:{STATE}     zset     the per-state index, scored by submit time
    {p}:pending           zset     the priority queue: score -priority, member "{seq:012d}:{id}", so equal
                                   priorities keep submit order (lexicographic order of the member)
    {p}:seq               string   the submit sequence counter
    {p}:events:{id}       stream   one job's history: one entry per transition, plus notes
    {p}:events            stream   every job's events, capped (for watchers and the exporter)
    {p}:quarantined:{id}  hash     a job record that no longer decodes, moved aside as it was
    {p}:quarantine        zset     the quarantined job ids, scored by submit time
    {p}:quarantine:reasons hash    id -> {"reason", "at"}: why and when each was quarantined
    {p}:lease:{name}      hash     a lease: owner, token, expires_at
    {p}:lease:{name}:token string  the lease's fencing-token counter; never reset

Owns names only; never talks to Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

from vastfleet.spec.job import JobState


@dataclass(frozen=True)
class Keys:
    prefix: str = "vf"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}:jobs"

    @property
    def state_prefix(self) -> str:
        """The Lua scripts append the state name to this to find a per-state index."""
        return f"{self.prefix}:state:"

    def state(self, state: JobState) -> str:
        return f"{self.state_prefix}{state.value}"

    @property
    def pending(self) -> str:
        return f"{self.prefix}:pending"

    @property
    def seq(self) -> str:
        return f"{self.prefix}:seq"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}:events:{job_id}"

    @property
    def all_events(self) -> str:
        return f"{self.prefix}:events"

    def quarantined(self, job_id: str) -> str:
        return f"{self.prefix}:quarantined:{job_id}"

    @property
    def quarantine(self) -> str:
        return f"{self.prefix}:quarantine"

    @property
    def quarantine_reasons(self) -> str:
        return f"{self.prefix}:quarantine:reasons"

    @property
    def spend_jobs(self) -> str:
        """Each job's spend in $, accrued by the scheduler from the marketplace's rates (scheduler/spend.py)."""
        return f"{self.prefix}:spend:job"

    def lease(self, name: str) -> str:
        return f"{self.prefix}:lease:{name}"

    def lease_token(self, name: str) -> str:
        return f"{self.prefix}:lease:{name}:token"
