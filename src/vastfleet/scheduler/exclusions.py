"""What the scheduler remembers about hosts and uploads across restarts, kept in Redis.

`HostExclusions`: hosts that failed us (offline, container exited, agent silent, never booted) are left out
of placement for a while. A sorted set scored by the expiry time; expired members are swept on read, so
the set never grows past the hosts excluded now. Outbid/paused never excludes a host (that is the market).

`CheckpointCosts`: how long a job's last checkpoint upload took (first presigned URL to commit), one Redis
key per job that expires after a week without uploads; the cadence hook reads it (one GET). Never decides placement or cadence itself.

`FleetMemory`: the placer's `FleetStats` (hosts and GPU models that failed or outbid us, the hours we ran
on them), one JSON value saved at most once a minute and read when a scheduler takes the lead, so a restart
or a new leader does not start from the priors again. Estimates, not state: a value it cannot read is
ignored with a warning.

`JobHazards`: the scheduler's interruption hazard for each live attempt, replaced whole every pass and
expiring soon after the last, so an agent API in another process answers the same Young/Daly cadence as
one beside the scheduler (one HGET), and falls back to its default when no scheduler is running.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from vastfleet.scheduler.policy.hazard import FleetStats
from vastfleet.spec.job import CheckpointRef, Job
from vastfleet.storage.upload_timer import UploadTimer

log = logging.getLogger(__name__)



class HostExclusions:
    def __init__(self, client: redis.Redis, prefix: str = "vf", period_s: float = 6 * 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = client
        self.key = f"{prefix}:excluded_hosts"
        self.period_s = period_s
        self.clock = clock

    def exclude(self, host_ids: Iterable[int], now: float | None = None) -> None:
        """Exclude each host until now + period (a later failure extends, never shortens, the period)."""
        until = (self.clock() if now is None else now) + self.period_s
        members = {str(int(h)): until for h in host_ids}
        if members and self.period_s > 0:
            self.redis.zadd(self.key, members, gt=True)  # type: ignore[arg-type]

    def live(self, now: float | None = None) -> frozenset[int]:
        """The hosts excluded at `now`; sweeps the expired ones."""
        at = self.clock() if now is None else now
        pipe = self.redis.pipeline()
        pipe.zremrangebyscore(self.key, "-inf", at)
        pipe.zrangebyscore(self.key, f"({at}", "+inf")
        _, members = pipe.execute()
        return frozenset(int(m) for m in members)


class CheckpointCosts:
    """Upload duration per job: `watch(ckpt)` times the first presigned PUT of a prefix, `on_commit` (an
    `AgentHooks.on_commit`) stores commit - first presign; `cost_s(job_id)` reads it back (None: unknown)."""

    KEEP_S = 7 * 24 * 3600  # a finished job's record goes away by itself

    def __init__(self, client: redis.Redis, prefix: str = "vf", clock: Callable[[], float] = time.time) -> None:
        self.redis = client
        self.key = f"{prefix}:checkpoint_cost"  # + ":<job id>"
        self.timer = UploadTimer(clock)

    def watch(self, ckpt: Any) -> Any:
        return self.timer.watch(ckpt)

    def on_commit(self, job: Job, ref: CheckpointRef) -> None:
        started = self.timer.started(ref.prefix)
        if started is not None:
            self.record(job.id, max(0.0, ref.committed_at - started))

    def record(self, job_id: str, seconds: float) -> None:
        self.redis.set(f"{self.key}:{job_id}", f"{seconds:.3f}", ex=self.KEEP_S)

    def cost_s(self, job_id: str) -> float | None:
        raw = self.redis.get(f"{self.key}:{job_id}")
        return None if raw is None else float(raw)


class JobHazards:
    """Interruptions per hour expected for each job's current attempt, as the scheduler last estimated."""

    def __init__(self, client: redis.Redis, prefix: str = "vf", ttl_s: float = 60.0) -> None:
        self.redis = client
        self.key = f"{prefix}:job_hazard"
        self.ttl_s = ttl_s  # a scheduler that stopped publishing stops being believed after this long

    def publish(self, hazards: dict[str, float]) -> None:
        pipe = self.redis.pipeline()  # MULTI: readers see the old map or the new one, never half of each
        pipe.delete(self.key)
        if hazards:
            pipe.hset(self.key, mapping={job: f"{max(h, 0.0):.6g}" for job, h in hazards.items()})
            pipe.pexpire(self.key, max(int(self.ttl_s * 1000), 1))
        pipe.execute()

    def hazard(self, job_id: str) -> float | None:
        raw = self.redis.hget(self.key, job_id)
        return None if raw is None else float(raw)


class FleetMemory:
    def __init__(self, client: redis.Redis, prefix: str = "vf", every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.redis = client
        self.key = f"{prefix}:fleet_stats"
        self.every_s = every_s
        self.clock = clock
        self._saved_at: float | None = None

    def save(self, stats: FleetStats, force: bool = False) -> bool:
        """Write `stats` unless it was written less than `every_s` ago; True when written."""
        now = self.clock()
        if not force and self._saved_at is not None and now - self._saved_at < self.every_s:
            return False
        self.redis.set(self.key, json.dumps(stats.to_json(), separators=(",", ":")))
        self._saved_at = now
        return True

    def load(self) -> FleetStats | None:
        raw = self.redis.get(self.key)
        if raw is None:
            return None
        try:
            return FleetStats.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignoring unreadable fleet stats at %s: starting from the priors", self.key, exc_info=True)
            return None
