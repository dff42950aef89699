"""Issue 11: one job record that no longer decodes never stops a listing, a read or the API. The store
quarantines it (out of the indexes and the queue, raw hash kept, reason recorded, one event, one
warning) and goes on with the rest. Records are corrupted by hand in the real redis-server, the way an
older version, a manual edit or a field that stopped validating would leave them."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import redis

from tests.spine.conftest import FakeClock, make_spec
from vastfleet.errors import Conflict, NotFound
from vastfleet.queue import JobStore
from vastfleet.spec import JobState

S = JobState


def corrupt_interval(redis_client: redis.Redis, job_id: str) -> None:
    """What a NaN interval became once stored: null, which no version reads."""
    key = f"vf:job:{job_id}"
    spec = json.loads(redis_client.hget(key, "spec"))
    spec["checkpoint"]["interval"] = None
    redis_client.hset(key, "spec", json.dumps(spec))


@pytest.fixture
def three(store: JobStore, clock: FakeClock, redis_client: redis.Redis) -> tuple[str, str, str]:
    """Three pending jobs; the middle one's record no longer decodes."""
    ids = []
    for name in ("first", "bad", "last"):
        clock.advance(1)
        ids.append(store.submit(make_spec(name=name)).id)
    corrupt_interval(redis_client, ids[1])
    return ids[0], ids[1], ids[2]


def test_list_and_pending_skip_and_quarantine_the_bad_record(store: JobStore, three: tuple[str, str, str],
                                                            redis_client: redis.Redis,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """Before: list() and pending() raised pydantic's ValidationError, so the API answered 500 and the
    scheduler's observation failed for every job."""
    first, bad, last = three
    raw_before = redis_client.hgetall(f"vf:job:{bad}")
    with caplog.at_level(logging.WARNING, logger="vastfleet.queue.quarantine"):
        assert [j.id for j in store.pending()] == [first, last]
        assert [j.id for j in store.list()] == [first, last]
        assert [j.id for j in store.list(S.PENDING)] == [first, last]
    warnings = [r for r in caplog.records if bad in r.getMessage()]
    assert len(warnings) == 1 and "checkpoint.interval" in warnings[0].getMessage()
    # out of every index and the queue; the raw hash kept as it was, under its quarantine key
    assert not redis_client.exists(f"vf:job:{bad}")
    assert redis_client.hgetall(f"vf:quarantined:{bad}") == raw_before
    assert redis_client.zscore("vf:jobs", bad) is None and redis_client.zscore("vf:state:PENDING", bad) is None
    assert all(not m.endswith(bad) for m in redis_client.zrange("vf:pending", 0, -1))
    assert store.counts()[S.PENDING] == 2
    [entry] = store.quarantine.list()
    assert entry.id == bad and entry.state == "PENDING" and entry.epoch == "0"
    assert "checkpoint.interval" in entry.reason and entry.submitted_at == 1_700_000_002.0
    # the event on the job's stream (and the shared one)
    stream = redis_client.xrange(f"vf:events:{bad}")
    assert [e[1]["kind"] for e in stream] == ["submitted", "quarantined"]
    assert "checkpoint.interval" in stream[-1][1]["reason"]
    assert redis_client.xrevrange("vf:events", count=1)[0][1]["kind"] == "quarantined"


def test_get_of_a_bad_or_quarantined_job_raises_a_clear_error(store: JobStore, three: tuple[str, str, str]) -> None:
    from vastfleet.queue.quarantine import JobQuarantined

    first, bad, _ = three
    with pytest.raises(JobQuarantined, match=f"job {bad} is quarantined: .*checkpoint.interval"):
        store.get(bad)  # the read that finds it quarantines it
    with pytest.raises(JobQuarantined, match="quarantined") as again:
        store.get(bad)  # and later reads say so
    assert isinstance(again.value, NotFound) and again.value.http_status == 409
    assert store.get(first).spec.name == "first"
    with pytest.raises(NotFound, match="no job j-nope"):
        store.get("j-nope")


def test_writers_cannot_touch_a_quarantined_record(store: JobStore, three: tuple[str, str, str],
                                                  redis_client: redis.Redis) -> None:
    _, bad, _ = three
    store.list()
    raw = redis_client.hgetall(f"vf:quarantined:{bad}")
    with pytest.raises(NotFound):
        store.transition(bad, S.PLACING, "offer chosen")
    with pytest.raises(NotFound):
        store.update(bad, expected_epoch=0, reason="x")
    with pytest.raises(NotFound):
        store.cancel(bad)
    assert redis_client.hgetall(f"vf:quarantined:{bad}") == raw
    assert not redis_client.exists(f"vf:job:{bad}") and redis_client.zcard("vf:state:PLACING") == 0


@pytest.mark.parametrize(("field", "text", "needle"), [
    ("progress", "{oops", "field 'progress' is not valid JSON"),
    ("state", '"SLEEPING"', "state:"),
    ("epoch", '"three"', "epoch:"),
    ("submitted_at", "null", "submitted_at:"),
    ("progress", '{"loss": NaN}', "field 'progress' is not valid JSON (NaN is not a JSON number)"),
    ("cost_usd", "Infinity", "field 'cost_usd' is not valid JSON (Infinity is not a JSON number)"),
])
def test_any_undecodable_field_is_quarantined_with_its_reason(store: JobStore, redis_client: redis.Redis,
                                                               field: str, text: str, needle: str) -> None:
    good, bad = store.submit(make_spec(name="good")).id, store.submit(make_spec(name="bad")).id
    redis_client.hset(f"vf:job:{bad}", field, text)
    assert [j.id for j in store.list()] == [good]
    assert needle in store.quarantine.reason(bad)  # type: ignore[operator]
    assert [e.kind for e in store.quarantine.get(bad).events] == ["submitted", "quarantined"]


def test_a_record_rewritten_after_it_was_read_is_not_quarantined(store: JobStore, three: tuple[str, str, str],
                                                                 redis_client: redis.Redis,
                                                                 clock: FakeClock) -> None:
    _, bad, _ = three
    fields = {k: v for k, v in redis_client.hgetall(f"vf:job:{bad}").items()}
    # a writer got there between the read and the verdict (every store write sets updated_at)
    redis_client.hset(f"vf:job:{bad}", "updated_at", json.dumps(clock.now + 1))
    assert store.quarantine.set_aside(bad, fields, "stale verdict") == "changed"
    assert redis_client.exists(f"vf:job:{bad}") and store.quarantine.list() == []


def test_release_puts_a_repaired_job_back_where_its_state_says(store: JobStore, three: tuple[str, str, str],
                                                              redis_client: redis.Redis) -> None:
    first, bad, last = three
    store.list()
    with pytest.raises(Conflict, match=f"job {bad} still does not decode"):
        store.quarantine.release(bad)
    spec = json.loads(redis_client.hget(f"vf:quarantined:{bad}", "spec"))
    spec["checkpoint"]["interval"] = 900  # the repair, by hand
    redis_client.hset(f"vf:quarantined:{bad}", "spec", json.dumps(spec))
    job = store.quarantine.release(bad)
    assert job.spec.checkpoint.interval == 900 and job.state == S.PENDING
    assert [j.id for j in store.pending()] == [first, bad, last], "its old place in the queue"
    assert [j.id for j in store.list()] == [first, bad, last]
    assert store.quarantine.list() == [] and store.quarantine.reason(bad) is None
    assert [e.kind for e in store.events(bad)][-2:] == ["quarantined", "released"]
    store.transition(bad, S.PLACING, "offer chosen")  # an ordinary job again
    with pytest.raises(NotFound, match="not quarantined"):
        store.quarantine.release(bad)


def test_a_cursor_on_a_quarantined_job_still_pages(store: JobStore, three: tuple[str, str, str]) -> None:
    first, bad, last = three
    store.list()
    assert [j.id for j in store.list(before=bad)] == [first]
    assert [j.id for j in store.list(after=bad)] == [last]


# --- the API ------------------------------------------------------------------------------------------


def test_the_api_lists_the_others_and_answers_409_for_the_bad_one(http: httpx.Client,
                                                                  three: tuple[str, str, str]) -> None:
    """Before: GET /v1/jobs answered 500 as long as one record did not decode."""
    first, bad, last = three
    listed = http.get("/v1/jobs")
    assert listed.status_code == 200 and [j["id"] for j in listed.json()] == [first, last]
    for method, path in [("GET", f"/v1/jobs/{bad}"), ("POST", f"/v1/jobs/{bad}/cancel"),
                         ("GET", f"/v1/jobs/{bad}/events")]:
        answer = http.request(method, path)
        assert answer.status_code == 409, path
        assert answer.json()["detail"].startswith(f"job {bad} is quarantined: the record does not validate")
    [entry] = http.get("/v1/quarantine").json()
    assert entry["id"] == bad and "checkpoint.interval" in entry["reason"]
    detail = http.get(f"/v1/quarantine/{bad}").json()
    assert json.loads(detail["fields"]["spec"])["checkpoint"]["interval"] is None
    assert [e["kind"] for e in detail["events"]] == ["submitted", "quarantined"]
    assert http.get(f"/v1/quarantine/{first}").status_code == 404
    assert http.post(f"/v1/quarantine/{bad}/release").status_code == 409  # still bad: stays
    assert http.get(f"/v1/jobs/{first}").status_code == 200
