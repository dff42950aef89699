"""The agent API over HTTP (in-process client): auth, epoch fencing, presign, commit verification, finish.

`running` claims with the onstart token (and a nonce) as the agent does, and hands back the session secret
the claim answered: every later call uses it."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.agent.conftest import (
    NONCE,
    Client,
    booted,
    call,
    claim,
    count_spec,
    manifest,
    replace_instance,
    running,
    upload,
)
from vastfleet.queue.heartbeats import last_heartbeat, request_checkpoint, stale_heartbeats
from vastfleet.spec import JobState


def test_claim_answers_the_job_and_moves_it_to_running(client: Client) -> None:
    tc, api, job, token = running(client)
    assert job.state == JobState.RUNNING and job.reason == "agent claimed"
    again = call(tc, token, job.id, "claim").json()  # a restarted container of the same attempt
    assert api.store.get(job.id).state == JobState.RUNNING
    assert again["run"] == job.spec.run and again["checkpoint"] is None and again["checkpoint_interval"] == 30
    assert again["heartbeat_interval"] == 0.2
    assert last_heartbeat(api.redis, job.id) is not None


@pytest.mark.parametrize("header", [None, "Bearer nonsense", "Basic abc", "Bearer vfa1.e30.AAAA"])
def test_bad_or_missing_token_is_401(client: Client, header: str | None) -> None:
    tc, api = client
    job = booted(api.store, count_spec())
    r = tc.post(
        f"/v1/agent/jobs/{job.id}/claim", json={}, headers={"Authorization": header} if header else {}
    )
    assert r.status_code == 401
    assert api.store.get(job.id).state == JobState.BOOTING


def test_expired_token_is_401(client: Client) -> None:
    tc, api = client
    job = booted(api.store, count_spec())
    token = api.signer.issue(job.id, job.epoch, 1001, ttl_s=-1)
    assert call(tc, token, job.id, "claim").status_code == 401


def test_token_of_another_job_is_403_and_changes_nothing(client: Client) -> None:
    tc, api = client
    mine, other = booted(api.store, count_spec()), booted(api.store, count_spec(), instance_id=1002)
    token = api.token(mine)
    events_before = len(api.store.events(other.id))
    for verb in ("claim", "heartbeat", "commit", "finish"):
        r = call(tc, token, other.id, verb, {"exit_code": 0, "step": 1, "files": {}})
        assert r.status_code == 403, (verb, r.text)
    assert api.store.get(other.id).state == JobState.BOOTING
    assert len(api.store.events(other.id)) == events_before


def test_stale_epoch_gets_409_and_stop_on_every_verb(client: Client) -> None:
    tc, api, job, token = running(client)
    replace_instance(api.store, job.id, 2002)
    before = api.store.get(job.id)
    bodies: dict[str, Any] = {
        "claim": {}, "heartbeat": {"progress": {"step": 1}}, "presign-upload": manifest(1, {"a": b"x"}),
        "presign-download": {}, "commit": manifest(1, {"a": b"x"}), "finish": {"exit_code": 0},
        "restore-failed": {"step": 1, "prefix": "jobs/x/epoch-1/step-1/", "reason": "damaged"},
    }
    for verb, body in bodies.items():
        r = call(tc, token, job.id, verb, body)
        assert r.status_code == 409, (verb, r.text)
        assert r.json()["action"] == "stop"
    after = api.store.get(job.id)
    assert (after.state, after.epoch, after.latest_checkpoint, after.exit_code) == (
        before.state,
        before.epoch,
        before.latest_checkpoint,
        before.exit_code,
    )


def test_token_of_another_instance_is_told_to_stop(client: Client) -> None:
    tc, api = client
    job = booted(api.store, count_spec(), instance_id=1001)
    r = call(tc, api.signer.issue(job.id, job.epoch, 999), job.id, "claim", {"nonce": NONCE})
    assert r.status_code == 409 and r.json()["action"] == "stop"
    assert api.store.get(job.id).state == JobState.BOOTING


def test_claim_while_placing_asks_to_retry(client: Client) -> None:
    tc, api = client
    job = api.store.submit(count_spec())
    job = api.store.transition(job.id, JobState.PLACING, "placing")
    r = call(tc, api.signer.issue(job.id, job.epoch, "vf-label"), job.id, "claim", {"nonce": NONCE})
    assert r.status_code == 503 and "Retry-After" in r.headers


def test_heartbeat_records_progress_and_answers_checkpoint_once(client: Client) -> None:
    tc, api, job, token = running(client)
    r = call(tc, token, job.id, "heartbeat", {"progress": {"step": 7}, "ckpt_step": 5})
    assert r.json()["action"] == "continue"
    assert api.store.get(job.id).progress == {"step": 7}
    at, data = last_heartbeat(api.redis, job.id)  # type: ignore[misc]
    assert data["progress"] == {"step": 7} and data["epoch"] == job.epoch and data["ckpt_step"] == 5
    assert [j for j, _ in stale_heartbeats(api.redis, at + 1)] == [job.id]
    request_checkpoint(api.redis, job.id, job.epoch)
    assert call(tc, token, job.id, "heartbeat").json()["action"] == "checkpoint"
    assert call(tc, token, job.id, "heartbeat").json()["action"] == "continue"


def test_commit_verifies_and_moves_latest_checkpoint(client: Client) -> None:
    tc, api, job, token = running(client)
    files = {"state.json": b'{"step": 5}', "sub/weights.bin": bytes(range(256)) * 40}
    m = upload(tc, token, job.id, 5, files)
    r = call(tc, token, job.id, "commit", m)
    assert r.status_code == 200, r.text
    ref = api.store.get(job.id).latest_checkpoint
    assert ref is not None and ref.step == 5 and ref.epoch == job.epoch
    assert ref.prefix == r.json()["prefix"] and ref.bytes == sum(map(len, files.values()))
    # under the job and epoch, and named by the manifest's content: another upload of step 5 gets other keys
    assert ref.prefix.startswith(f"jobs/{job.id}/epoch-{job.epoch}/step-5-") and ref.prefix.endswith("/")
    down = call(tc, token, job.id, "presign-download").json()["checkpoint"]
    for rel, entry in down["files"].items():
        assert tc.get(entry["url"]).content == files[rel]


def test_commit_with_wrong_checksum_is_422_and_latest_unchanged(client: Client) -> None:
    tc, api, job, token = running(client)
    call(tc, token, job.id, "commit", upload(tc, token, job.id, 5, {"a": b"good"}))
    before = api.store.get(job.id).latest_checkpoint
    m = upload(tc, token, job.id, 10, {"a": b"good10"})
    lie = {"step": 10, "files": {"a": {"size": 6, "sha256": hashlib.sha256(b"other!").hexdigest()}}}
    r = call(tc, token, job.id, "commit", lie)
    assert r.status_code == 422 and "does not match" in r.json()["detail"]
    missing = {"step": 10, "files": {**m["files"], "never-uploaded": {"size": 1, "sha256": "0" * 64}}}
    assert call(tc, token, job.id, "commit", missing).status_code == 422
    assert api.store.get(job.id).latest_checkpoint == before


def test_blob_put_refuses_bytes_other_than_signed(client: Client) -> None:
    tc, api, job, token = running(client)
    upload(tc, token, job.id, 3, {"a": b"honest"}, stored={"a": b"forged"})
    answer = call(tc, token, job.id, "presign-upload", manifest(3, {"a": b"honest"})).json()
    assert api.ckpt.stat(answer["prefix"] + "a") is None
    url = answer["files"]["a"]["url"]
    assert tc.put(url.replace("/a?", "/b?"), content=b"honest").status_code == 403
    assert tc.get(url).status_code == 403  # a PUT URL does not read


@pytest.mark.parametrize("rel", ["../escape", "/etc/passwd", "a/../../b", "a//b", "C:/x", "a\\b", "./a", ""])
def test_presign_refuses_unsafe_paths(client: Client, rel: str) -> None:
    tc, _api, job, token = running(client)
    r = call(
        tc, token, job.id, "presign-upload", {"step": 1, "files": {rel: {"size": 1, "sha256": "a" * 64}}}
    )
    assert r.status_code == 422, r.text


def test_presign_limits_count_and_size(client: Client) -> None:
    tc, _api, job, token = running(client)
    huge = {"step": 1, "files": {"a": {"size": 3 * 1024**4, "sha256": "a" * 64}}}
    assert "limit" in call(tc, token, job.id, "presign-upload", huge).json()["detail"]
    many = {"step": 1, "files": {f"f{i}": {"size": 1, "sha256": "a" * 64} for i in range(10_001)}}
    assert call(tc, token, job.id, "presign-upload", many).status_code == 422


@pytest.mark.parametrize(
    ("retries", "code", "state", "errors"),
    [
        (0, 0, JobState.SUCCEEDED, 0),
        (0, 3, JobState.FAILED, 1),
        (1, 3, JobState.PENDING, 1),
    ],
)
def test_finish_follows_retries_on_error(
    client: Client, retries: int, code: int, state: JobState, errors: int
) -> None:
    tc, api = client
    job = booted(api.store, count_spec(retries_on_error=retries))
    token = claim(tc, api, job)
    r = call(tc, token, job.id, "finish", {"exit_code": code})
    assert r.json() == {"state": state.value, "repeated": False}
    job = api.store.get(job.id)
    assert (job.state, job.exit_code, job.errors) == (state, code, errors)
    assert call(tc, token, job.id, "finish", {"exit_code": code}).json()["repeated"] is True
    assert last_heartbeat(api.redis, job.id) is None


def test_claim_with_a_host_error_interrupts_from_booting_and_says_nothing_of_the_job(client: Client) -> None:
    tc, api = client
    job = booted(api.store, count_spec(env={"SOME": "value"}))
    r = call(tc, api.token(job), job.id, "claim", {"nonce": NONCE, "error": "no GPU visible: x"})
    assert r.status_code == 200 and r.json() == {"state": "INTERRUPTED"}
    job = api.store.get(job.id)
    assert job.state == JobState.INTERRUPTED and job.reason == "agent: no GPU visible: x" and job.errors == 0


def test_finish_without_exit_code_is_a_host_fault_by_default(client: Client) -> None:
    tc, api, job, token = running(client)
    r = call(tc, token, job.id, "finish", {"exit_code": None, "error": "no GPU visible: 0 of 1 GPUs"})
    assert r.status_code == 200
    job = api.store.get(job.id)
    assert job.state == JobState.INTERRUPTED and job.reason.startswith("agent: no GPU visible") and job.errors == 0


def test_cancelled_job_tells_agent_to_stop_upload_and_finish(client: Client) -> None:
    """Cancelled: stop the job but keep what it wrote (uploads still open for this attempt), then finish; the
    heartbeat record goes with the finish, so teardown destroys the instance at its next pass."""
    tc, api, job, token = running(client)
    api.store.cancel(job.id)
    r = call(tc, token, job.id, "heartbeat", {"pending_uploads": 1})
    assert r.status_code == 200 and r.json()["action"] == "stop" and r.json()["upload"] is True
    assert last_heartbeat(api.store.redis, job.id)[1]["pending_uploads"] == 1
    done = call(tc, token, job.id, "finish", {"exit_code": 143})
    assert done.status_code == 200 and done.json()["state"] == "CANCELLED"
    assert last_heartbeat(api.store.redis, job.id) is None


def test_agent_routes_inside_the_spine_app_take_agent_tokens_not_user_tokens(
    redis_url: str, local_store: Any
) -> None:
    import redis as redis_lib

    from vastfleet.agent.tokens import TokenSigner
    from vastfleet.api.agent_routes import agent_router
    from vastfleet.api.app import create_app
    from vastfleet.api.context import ApiContext
    from vastfleet.queue import JobStore

    store = JobStore(redis_lib.Redis.from_url(redis_url))
    signer = TokenSigner(b"agent-test-secret-0123456789")
    app = create_app(
        ApiContext(store=store, token="user-token-xyz", agent_router=agent_router(store, local_store, signer))
    )
    local_store.base_url = "http://testserver"
    job = booted(store, count_spec())
    with TestClient(app) as tc:
        assert call(tc, "user-token-xyz", job.id, "claim").status_code == 401
        claimed = call(tc, signer.issue(job.id, job.epoch, 1001), job.id, "claim", {"nonce": NONCE})
        assert claimed.status_code == 200
        session = claimed.json()["session"]
        m = upload(tc, session, job.id, 1, {"a": b"blob through the app"})
        assert call(tc, session, job.id, "commit", m).status_code == 200
    assert store.get(job.id).state == JobState.RUNNING
