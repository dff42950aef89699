"""The RQ queues that carry marketplace actions (create, destroy, salvage) to the action workers.

Plumbing only: the queue names and `action_queue(redis, name)`. The action functions themselves (and
their idempotency by instance label) live with the scheduler's actions module; this module never knows
what a job does.
"""

from __future__ import annotations

import redis
from rq import Queue

CREATE = "vastfleet-create"  # rent an offer for a job's epoch
DESTROY = "vastfleet-destroy"  # tear an instance down (a durable obligation, retried until confirmed gone)
SALVAGE = "vastfleet-salvage"  # cloud-copy un-uploaded checkpoints off a dying instance

ACTION_QUEUES: tuple[str, ...] = (CREATE, DESTROY, SALVAGE)


def raw_connection(client: redis.Redis) -> redis.Redis:
    """A client on the same server that returns bytes, as RQ requires (it pickles its jobs)."""
    kwargs = client.connection_pool.connection_kwargs
    if not kwargs.get("decode_responses"):
        return client
    pool_class = type(client.connection_pool)
    pool = pool_class(connection_class=client.connection_pool.connection_class,
                      **{**kwargs, "decode_responses": False})
    return redis.Redis(connection_pool=pool)


def action_queue(client: redis.Redis, name: str, default_timeout: int = 600) -> Queue:
    """The RQ queue for one action kind; `name` is one of ACTION_QUEUES."""
    if name not in ACTION_QUEUES:
        raise ValueError(f"unknown action queue {name!r} (known: {', '.join(ACTION_QUEUES)})")
    return Queue(name, connection=raw_connection(client), default_timeout=default_timeout)
