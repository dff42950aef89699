"""Agent heartbeats in Redis, for the supervisor: when each job's agent was last heard, and what it said.

Keys (prefix `vf` by default):

    {p}:hb          zset   job id -> time of its agent's last heartbeat (unix seconds)
    {p}:hb:data     hash   job id -> JSON {"at", "epoch", "progress", "ckpt_step", "error", "gpus"}
    {p}:hb:ckpt     hash   job id -> epoch for which the control plane asks for a checkpoint now

The agent API writes a heartbeat only after the job store accepted it for the job's current epoch, and
the data carries that epoch, so a reader can ignore a heartbeat of an attempt that ended in between.
`stale_heartbeats(redis, before)` lists the jobs not heard since a time (the supervisor's sweep);
`request_checkpoint` makes the next heartbeat answer `{"action": "checkpoint"}` once.

Owns these keys only; never changes a job's state.
"""

from __future__ import annotations

import json
from typing import Any

import redis


def _keys(prefix: str) -> tuple[str, str, str]:
    return f"{prefix}:hb", f"{prefix}:hb:data", f"{prefix}:hb:ckpt"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def record_heartbeat(
    r: redis.Redis, job_id: str, epoch: int, at: float, data: dict[str, Any], prefix: str = "vf"
) -> None:
    times, blobs, _ = _keys(prefix)
    payload = json.dumps({**data, "at": at, "epoch": int(epoch)}, separators=(",", ":"))
    pipe = r.pipeline(transaction=True)
    pipe.zadd(times, {job_id: at})
    pipe.hset(blobs, job_id, payload)
    pipe.execute()


def last_heartbeat(r: redis.Redis, job_id: str, prefix: str = "vf") -> tuple[float, dict[str, Any]] | None:
    """(time, data) of the job's last agent heartbeat, or None when its agent was never heard."""
    times, blobs, _ = _keys(prefix)
    pipe = r.pipeline(transaction=False)
    pipe.zscore(times, job_id)
    pipe.hget(blobs, job_id)
    replies = pipe.execute()
    at, raw = replies[0], replies[1]
    if at is None:
        return None
    return float(at), json.loads(_text(raw)) if raw else {}


def stale_heartbeats(r: redis.Redis, before: float, prefix: str = "vf") -> list[tuple[str, float]]:
    """Jobs whose last heartbeat is older than `before`, oldest first."""
    times, _, _ = _keys(prefix)
    rows: list[Any] = list(r.zrangebyscore(times, "-inf", f"({before}", withscores=True))
    return [(_text(row[0]), float(row[1])) for row in rows]


def clear_heartbeat(r: redis.Redis, job_id: str, prefix: str = "vf") -> None:
    """Forget a job's heartbeat (its attempt ended); the next attempt starts unheard."""
    times, blobs, ckpt = _keys(prefix)
    pipe = r.pipeline(transaction=True)
    pipe.zrem(times, job_id)
    pipe.hdel(blobs, job_id)
    pipe.hdel(ckpt, job_id)
    pipe.execute()


def request_checkpoint(r: redis.Redis, job_id: str, epoch: int, prefix: str = "vf") -> None:
    """Ask the agent of (job, epoch) to have the job checkpoint now (answered on its next heartbeat)."""
    r.hset(_keys(prefix)[2], job_id, str(int(epoch)))


def take_checkpoint_request(r: redis.Redis, job_id: str, epoch: int, prefix: str = "vf") -> bool:
    """True once per request made for this epoch; a request for another epoch is dropped."""
    key = _keys(prefix)[2]
    pipe = r.pipeline(transaction=True)
    pipe.hget(key, job_id)
    pipe.hdel(key, job_id)
    raw, _ = pipe.execute()
    return raw is not None and _text(raw) == str(int(epoch))
