"""Issue 11 through the real API (uvicorn over the real redis-server): non-finite numbers and control
characters in JSON bodies get the spec's 422, oversized bodies get 413 before they are read, and job
listings are bounded summaries with a cursor."""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.spine.conftest import TOKEN, FakeClock, spec_dict
from vastfleet.api import ApiContext, create_app
from vastfleet.api.serve import ServerThread
from vastfleet.client import Client
from vastfleet.errors import BadInput, SpecError
from vastfleet.queue import JobStore
from vastfleet.spec import JobState, job_spec_from_dict

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def raw_post(http: httpx.Client, body: str) -> httpx.Response:
    """JSON text as a client may send it: Python's json (and many others) write NaN and Infinity."""
    return http.post("/v1/jobs", content=body.encode(), headers={"content-type": "application/json"})


# --- non-finite numbers and control characters in JSON ------------------------------------------------


@pytest.mark.parametrize(("path", "value"), [
    (("checkpoint", "interval"), "NaN"), (("checkpoint", "interval"), "Infinity"), (("deadline",), "NaN"),
    (("budget_usd",), "Infinity"), (("work_hours",), "-Infinity"), (("resources", "max_price_per_hour"), "NaN"),
    (("resources", "disk_gb"), "1e999"), (("env", "LR"), "NaN"),
])
def test_non_finite_numbers_in_json_get_the_specs_422_and_write_nothing(
        http: httpx.Client, redis_client: redis.Redis, path: tuple[str, ...], value: str) -> None:
    """Before: `{"checkpoint": {"interval": NaN}}` was stored as null, and from then on GET /v1/jobs
    answered 500 (and every scheduler pass failed)."""
    data = spec_dict()
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = "__BAD__"
    body = json.dumps(data).replace('"__BAD__"', value)
    with pytest.raises(SpecError) as expected:
        job_spec_from_dict(json.loads(body))
    answer = raw_post(http, body)
    assert answer.status_code == 422 and answer.json() == {"detail": expected.value.message}
    assert ".".join(path[:1] if path[0] == "env" else path) in answer.json()["detail"]
    assert redis_client.dbsize() == 0
    listed = http.get("/v1/jobs")
    assert listed.status_code == 200 and listed.json() == []


@pytest.mark.parametrize(("overrides", "needle"), [
    ({"env": {"A": "x\u0000y"}}, "env.A: contains a NUL character"),
    ({"env": {"A\u0000": "x"}}, "is not a valid environment variable name"),
    ({"run": "python\u0000 x"}, "run: contains a NUL character"),
    ({"image": "img\nFROM evil"}, "image: contains the control character"),
    ({"secrets": ["A\u0000"]}, "secrets: "),
    ({"resources": {"gpu": ["RTX_4090"], "regions": ["US\r\nX-Evil: 1"]}}, "resources.regions.0: contains"),
])
def test_nul_and_control_characters_get_422_naming_the_key(http: httpx.Client, redis_client: redis.Redis,
                                                           overrides: dict[str, Any], needle: str) -> None:
    answer = http.post("/v1/jobs", json=spec_dict(**overrides))
    assert answer.status_code == 422 and needle in answer.json()["detail"]
    assert redis_client.dbsize() == 0


def test_a_lone_surrogate_in_a_key_is_a_422_not_a_500(http: httpx.Client, redis_client: redis.Redis) -> None:
    body = json.dumps(spec_dict()).replace('"run"', '"r\\ud800n"')
    answer = raw_post(http, body)
    assert answer.status_code == 422 and "unicode string" in answer.json()["detail"]
    assert redis_client.dbsize() == 0


# --- sizes --------------------------------------------------------------------------------------------


def test_a_spec_over_a_field_cap_gets_422_with_the_limit(http: httpx.Client, redis_client: redis.Redis) -> None:
    answer = http.post("/v1/jobs", json=spec_dict(env={"BLOB": "x" * 200_000}))  # under the body cap
    assert answer.status_code == 422
    assert "env: BLOB: the value is 200000 bytes; at most 16 KiB per value" in answer.json()["detail"]
    assert redis_client.dbsize() == 0


def test_a_10_mb_spec_gets_413_naming_the_limit(http: httpx.Client, redis_client: redis.Redis) -> None:
    """Before: a 10 MB env value was accepted and every listing carried it (115 MB, 1.5 s)."""
    answer = http.post("/v1/jobs", json=spec_dict(env={"BLOB": "x" * 10_000_000}))
    assert answer.status_code == 413
    assert "larger than the limit of 1 MiB" in answer.json()["detail"]
    assert redis_client.dbsize() == 0


@pytest.fixture
def small(store: JobStore) -> Iterator[str]:
    """The API with a 2 KiB cap for users and 4 KiB for agents: what a big body does, without one."""
    with ServerThread(create_app(ApiContext(store=store, token=TOKEN, max_body_bytes=2048,
                                            max_agent_body_bytes=4096))) as url:
        yield url


def exchange(url: str, head: str, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """One raw HTTP/1.1 exchange: what a client that declares or streams any size can send."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    return status, json.loads(reply.split(b"\r\n\r\n", 1)[1])


def test_a_declared_length_over_the_cap_is_refused_before_any_body_is_read(small: str,
                                                                           redis_client: redis.Redis) -> None:
    # 100 MB declared and nothing sent: the answer comes at once, so the body was never waited for
    head = (f"POST /v1/jobs HTTP/1.1\nHost: x\nAuthorization: Bearer {TOKEN}\n"
            "Content-Type: application/json\nContent-Length: 100000000\n")
    status, body = exchange(small, head)
    assert status == 413 and body == {"detail": "the request body (100000000 bytes) is larger than the limit of"
                                                " 2 KiB for this route"}
    assert redis_client.dbsize() == 0


def test_a_streamed_body_is_counted_as_it_comes(small: str, redis_client: redis.Redis) -> None:
    """Chunked transfer declares no length: the bytes are counted and the cap still holds."""
    data = json.dumps(spec_dict(env={"BLOB": "x" * 3000})).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 500]), data[i:i + 500]) for i in range(0, len(data), 500))
    head = (f"POST /v1/jobs HTTP/1.1\nHost: x\nAuthorization: Bearer {TOKEN}\n"
            "Content-Type: application/json\nTransfer-Encoding: chunked\n")
    status, body = exchange(small, head, chunks + b"0\r\n\r\n")
    assert status == 413 and "larger than the limit of 2 KiB" in body["detail"]
    assert redis_client.dbsize() == 0
    # the same route takes a small streamed body as usual
    data = json.dumps(spec_dict()).encode()
    status, body = exchange(small, head, b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
    assert status == 201 and body["state"] == "PENDING"


def test_every_route_has_a_cap_and_the_agents_routes_their_own(small: str) -> None:
    blob = b"x" * 3000
    for method, path in [("GET", "/v1/jobs"), ("POST", "/v1/jobs/j-x/cancel"), ("GET", "/healthz")]:
        answer = httpx.request(method, f"{small}{path}", content=blob, headers=AUTH)
        assert answer.status_code == 413, path
    # 3000 bytes are within the agents' 4 KiB: past the cap, to the route (which knows no such job)
    assert httpx.post(f"{small}/v1/agent/jobs/j-x/heartbeat", content=blob).status_code == 404
    assert httpx.post(f"{small}/v1/agent/jobs/j-x/heartbeat", content=b"x" * 5000).status_code == 413


# --- bounded listings ---------------------------------------------------------------------------------


def test_the_listing_is_summaries_never_full_specs(http: httpx.Client, store: JobStore, clock: FakeClock) -> None:
    job = http.post("/v1/jobs", json=spec_dict(name="one", priority=3, env={"BIG": "x" * 10_000})).json()
    store.transition(job["id"], JobState.PLACING, "r" * 5000)
    store.update(job["id"], expected_epoch=1, progress={"step": 7, "loss": 0.5, "log": "z" * 2000,
                                                        "nested": {"a": 1}})
    [summary] = http.get("/v1/jobs").json()
    assert "spec" not in summary and summary["name"] == "one" and summary["priority"] == 3
    assert summary["state"] == "PLACING" and summary["epoch"] == 1
    assert len(summary["reason"]) == 200 and summary["reason"].endswith("...")
    assert summary["progress"] == {"step": 7, "loss": 0.5} and summary["progress_truncated"] is True
    assert len(json.dumps(summary)) < 1500
    full = http.get(f"/v1/jobs/{job['id']}").json()
    assert full["spec"]["env"]["BIG"] == "x" * 10_000 and len(full["reason"]) == 5000  # the one job: in full


def test_the_listing_is_bounded_and_pages_by_cursor(http: httpx.Client, store: JobStore, clock: FakeClock) -> None:
    """The default page is 100 jobs, at most 1000; `before`/`after` a job id page in submit order, with
    ties in submit time (this clock does not move) neither dropped nor repeated."""
    spec = job_spec_from_dict(spec_dict())
    ids = [store.submit(spec).id for _ in range(130)]
    for i in range(130, 250):
        clock.advance(0.5 if i % 3 == 0 else 0)
        ids.append(store.submit(spec).id)
    order = [j.id for j in store.list(limit=1000)]  # submit order: time, then id among equal times
    assert sorted(order) == sorted(ids)
    page = http.get("/v1/jobs").json()
    assert [j["id"] for j in page] == order[-100:]
    assert http.get("/v1/jobs", params={"limit": 1001}).status_code == 422
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 37} | ({"before": cursor} if cursor else {})
        page = http.get("/v1/jobs", params=params).json()
        if not page:
            break
        seen = [j["id"] for j in page] + seen
        cursor = page[0]["id"]
    assert seen == order
    forward, cursor = [], order[0]
    forward.append(cursor)
    while page := http.get("/v1/jobs", params={"limit": 41, "after": cursor}).json():
        forward += [j["id"] for j in page]
        cursor = page[-1]["id"]
    assert forward == order
    unknown = http.get("/v1/jobs", params={"before": "j-nope"})
    assert unknown.status_code == 422 and "before: no job 'j-nope'" in unknown.json()["detail"]
    both = http.get("/v1/jobs", params={"before": order[5], "after": order[1]})
    assert both.status_code == 422


def test_state_filtered_pages_and_the_client(api: str, store: JobStore, clock: FakeClock) -> None:
    spec = job_spec_from_dict(spec_dict())
    jobs = []
    for _ in range(9):
        clock.advance(1)
        jobs.append(store.submit(spec).id)
    for job_id in jobs[::2]:
        store.transition(job_id, JobState.PLACING, "offer chosen")
    with Client(api, TOKEN) as client:
        placing = client.list(JobState.PLACING, limit=2)
        assert [j.id for j in placing] == jobs[6::2]
        # the cursor job need not be in the filtered index (it may have changed state since)
        assert [j.id for j in client.list("placing", limit=10, before=jobs[5])] == [jobs[0], jobs[2], jobs[4]]
        assert [j.id for j in client.list(limit=3, after=jobs[2])] == jobs[3:6]
        with pytest.raises(BadInput, match="limit"):
            client.list(limit=5000)


def test_nan_never_reaches_a_stored_record_so_listing_stays_200(http: httpx.Client, store: JobStore) -> None:
    """The failure of issue 11 end to end: the NaN submit is refused, the queue stays readable."""
    good = http.post("/v1/jobs", json=spec_dict()).json()["id"]
    body = json.dumps(spec_dict(checkpoint={"interval": math.nan}))
    assert raw_post(http, body).status_code == 422
    assert [j["id"] for j in http.get("/v1/jobs").json()] == [good]
