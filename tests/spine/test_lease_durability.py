"""Leases with fencing tokens, the durability of an acknowledged submit across kill -9, the action queues."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from rq import Queue

from tests.helpers import RedisServer
from tests.spine.conftest import FakeClock, make_spec
from vastfleet.queue import ACTION_QUEUES, JobStore, Lease, action_queue
from vastfleet.spec import JobState


def test_lease_is_exclusive_until_it_expires_and_tokens_only_grow(redis_client: redis.Redis,
                                                                 clock: FakeClock) -> None:
    lease = Lease(redis_client, "scheduler", ttl_s=10, clock=clock)
    first = lease.acquire("a")
    assert first is not None
    assert lease.acquire("b") is None
    assert lease.acquire("a") == first  # re-acquiring one's own lease keeps the token
    assert lease.holder() == ("a", first) and lease.is_current(first)

    clock.advance(9)
    assert lease.renew("a", first)
    clock.advance(9)  # 18 s after the start, alive thanks to the renewal
    assert lease.acquire("b") is None and lease.holder() == ("a", first)

    clock.advance(11)  # expired
    assert lease.holder() is None
    assert not lease.renew("a", first)  # an expired lease is lost even if nobody took it
    second = lease.acquire("b")
    assert second is not None and second > first
    assert not lease.is_current(first) and lease.is_current(second)
    assert not lease.renew("a", first)
    lease.release("a", first)  # the old holder cannot release the new holder's lease
    assert lease.holder() == ("b", second)

    lease.release("b", second)
    assert lease.holder() is None
    third = lease.acquire("a")
    assert third is not None and third > second


def test_leases_are_independent_by_name(redis_client: redis.Redis, clock: FakeClock) -> None:
    one, two = Lease(redis_client, "one", 5, clock), Lease(redis_client, "two", 5, clock)
    assert one.acquire("x") is not None and two.acquire("y") is not None
    assert one.holder()[0] == "x" and two.holder()[0] == "y"  # type: ignore[index]


def test_acknowledged_submit_survives_kill9_and_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "aof", appendonly=True).start()
    try:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        store = JobStore(client)
        job = store.submit(make_spec(name="durable"))
        placed = store.transition(job.id, JobState.PLACING, "offer chosen", expected_epoch=0, offer_id=3)
        client.close()

        server.kill9()  # no shutdown, no final save: only what was fsynced survives
        server.start()  # same directory, same port

        client = redis.Redis.from_url(server.url, decode_responses=True)
        store = JobStore(client)
        assert store.get(job.id) == placed
        assert [e.kind for e in store.events(job.id)] == ["submitted", "transition"]
        assert store.ids(JobState.PLACING) == [job.id]
        client.close()
    finally:
        server.stop()


def test_action_queues_use_a_bytes_connection_on_the_same_server(redis_client: redis.Redis) -> None:
    queue = action_queue(redis_client, ACTION_QUEUES[0])  # given a decoding client, as the store uses
    assert isinstance(queue, Queue) and queue.name == "vastfleet-create"
    job = queue.enqueue(json.dumps, {"offer": 1})
    assert queue.count == 1 and queue.fetch_job(job.id) is not None
    assert redis_client.exists(f"rq:job:{job.id}")  # the same server as the store's client
    with pytest.raises(ValueError):
        action_queue(redis_client, "reboot")
