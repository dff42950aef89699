"""The user API served by uvicorn over the real redis-server: auth, validation, errors, the job routes."""

from __future__ import annotations

import fastapi
import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.helpers import free_port
from tests.spine.conftest import TOKEN, FakeClock, spec_dict
from vastfleet.api import ApiContext, create_app
from vastfleet.api.serve import ServerThread
from vastfleet.errors import SpecError
from vastfleet.queue import JobStore
from vastfleet.spec import JobState, job_spec_from_dict

ROUTES = [("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("GET", "/v1/jobs/j-x"), ("POST", "/v1/jobs/j-x/cancel"),
          ("GET", "/v1/jobs/j-x/events")]


def test_health_needs_no_token_and_openapi_is_published(api: str) -> None:
    assert httpx.get(f"{api}/healthz").json()["status"] == "ok"
    schema = httpx.get(f"{api}/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/events",
            "/healthz"} <= set(schema["paths"])
    assert "JobSpec" in schema["components"]["schemas"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_user_routes_need_the_token(api: str, redis_client: redis.Redis, method: str, path: str) -> None:
    body = spec_dict() if method == "POST" else None
    missing = httpx.request(method, f"{api}{path}", json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.request(method, f"{api}{path}", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.json() == {"detail": "wrong bearer token"}
    basic = httpx.request(method, f"{api}{path}", json=body, auth=("user", TOKEN))
    assert basic.status_code == 401
    assert redis_client.dbsize() == 0  # nothing was submitted


def test_submit_get_list_and_filter(http: httpx.Client, store: JobStore, clock: FakeClock) -> None:
    created = http.post("/v1/jobs", json=spec_dict(name="one", priority=4))
    assert created.status_code == 201
    job = created.json()
    assert job["id"].startswith("j-") and job["state"] == "PENDING" and job["spec"]["priority"] == 4
    assert job["spec"]["resources"]["gpu"] == ["RTX 4090"]
    assert http.get(f"/v1/jobs/{job['id']}").json() == job
    clock.advance(1)
    other = http.post("/v1/jobs", json=spec_dict(name="two")).json()
    store.transition(other["id"], JobState.PLACING, "offer chosen")
    assert [j["id"] for j in http.get("/v1/jobs").json()] == [job["id"], other["id"]]
    assert [j["id"] for j in http.get("/v1/jobs", params={"state": "placing"}).json()] == [other["id"]]
    bad = http.get("/v1/jobs", params={"state": "SLEEPING"})
    assert bad.status_code == 422 and "unknown state 'SLEEPING'" in bad.json()["detail"]
    assert http.get("/v1/jobs", params={"limit": 0}).status_code == 422


@pytest.mark.parametrize("body", [
    spec_dict(resources={"gpu": ["RTX_4091"], "gpus": 0}),
    spec_dict(bogus=1, priority="high"),
    {"name": "x"},
    spec_dict(deadline="tomorrow-ish"),
], ids=["gpu", "unknown-key", "missing", "deadline"])
def test_bad_spec_gets_422_with_the_clis_message_and_writes_nothing(http: httpx.Client,
                                                                    redis_client: redis.Redis,
                                                                    body: dict) -> None:
    with pytest.raises(SpecError) as expected:
        job_spec_from_dict(body)
    answer = http.post("/v1/jobs", json=body)
    assert answer.status_code == 422
    assert answer.json() == {"detail": expected.value.message}
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize(("content", "needle"), [
    (b"{not json", "not valid JSON"), (b"[1, 2]", "expected a JSON object"), (b"", "expected a JSON object"),
    (b'"text"', "expected a JSON object"),
])
def test_malformed_body_gets_422_never_500(http: httpx.Client, redis_client: redis.Redis, content: bytes,
                                           needle: str) -> None:
    answer = http.post("/v1/jobs", content=content, headers={"content-type": "application/json"})
    assert answer.status_code == 422 and needle in answer.json()["detail"]
    assert redis_client.dbsize() == 0


def test_unknown_job_is_404(http: httpx.Client) -> None:
    for method, path in ROUTES[2:]:
        answer = http.request(method, path)
        assert answer.status_code == 404 and answer.json() == {"detail": "no job j-x"}


def test_cancel_and_events(http: httpx.Client, store: JobStore) -> None:
    job_id = http.post("/v1/jobs", json=spec_dict()).json()["id"]
    store.transition(job_id, JobState.PLACING, "offer 7 at $0.31/h")
    cancelled = http.post(f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "CANCELLED" and cancelled.json()["cancel_requested"] is True
    again = http.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "already CANCELLED" in again.json()["detail"]
    events = http.get(f"/v1/jobs/{job_id}/events").json()
    assert [(e["kind"], e["to_state"], e["reason"]) for e in events] == [
        ("submitted", "PENDING", "submitted"), ("transition", "PLACING", "offer 7 at $0.31/h"),
        ("transition", "CANCELLED", "cancelled by user")]
    later = http.get(f"/v1/jobs/{job_id}/events", params={"after": events[0]["id"]}).json()
    assert [e["id"] for e in later] == [e["id"] for e in events[1:]]
    assert http.get(f"/v1/jobs/{job_id}/events", params={"after": "x"}).status_code == 422


def test_redis_outage_is_503_not_500() -> None:
    # no client-side retries: the default backoff would only make the test slow
    client = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0), decode_responses=True)
    store = JobStore(client)
    with ServerThread(create_app(ApiContext(store=store, token=TOKEN))) as url:
        assert httpx.get(f"{url}/healthz").status_code == 503
        answer = httpx.get(f"{url}/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 503 and "Redis" in answer.json()["detail"]


def test_agent_router_and_metrics_slots_are_mounted(store: JobStore) -> None:
    agent = fastapi.APIRouter(prefix="/v1/agent")

    @agent.get("/ping")
    def ping() -> dict[str, str]:
        return {"agent": "ok"}

    async def metrics(scope: dict, receive: object, send: object) -> None:
        response = fastapi.responses.PlainTextResponse("vastfleet_up 1\n")
        await response(scope, receive, send)  # type: ignore[arg-type]

    with ServerThread(create_app(ApiContext(store=store, token=TOKEN, agent_router=agent,
                                            metrics_app=metrics))) as url:
        assert httpx.get(f"{url}/v1/agent/ping").json() == {"agent": "ok"}  # not behind the user token
        assert httpx.get(f"{url}/metrics/").text == "vastfleet_up 1\n"
