"""The onstart token (in the instance env vast lists to anyone who sees the listing) opens one claim; the
session secret that claim answers is what every later call needs. A leaked token can neither claim again
(getting the job's secrets), nor finish a running job, nor upload over its checkpoints."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.agent.conftest import (
    AGENT,
    NONCE,
    AgentApi,
    Client,
    booted,
    call,
    claim,
    count_spec,
    manifest,
    output,
    replace_instance,
    running,
    upload,
)
from tests.helpers import free_port, wait_for
from vastfleet.agent.onstart import build_onstart
from vastfleet.api.agent_routes import AgentSettings
from vastfleet.spec import JobState

OTHER_NONCE = "an0ther-nonce-someone-else-made-42"


def redis_dump(api: AgentApi) -> str:
    """Every key and value of the test's Redis, as text: to prove what is NOT stored."""
    out = []
    for key in api.redis.scan_iter("*"):
        kind = api.redis.type(key)
        if kind == b"hash":
            out.append(repr(api.redis.hgetall(key)))
        elif kind == b"string":
            out.append(repr(api.redis.get(key)))
        elif kind == b"stream":
            out.append(repr(api.redis.xrange(key)))
        out.append(repr(key))
    return "\n".join(out)


def test_a_second_claim_with_the_onstart_token_is_refused_and_noted(client: Client) -> None:
    tc, api = client
    job = booted(api.store, count_spec(env={"HF_TOKEN": "hf-value-never-to-leak"}))
    token = api.token(job)
    session = claim(tc, api, job)
    before = api.store.get(job.id)
    # someone who read the listing tries to claim the running attempt (with a nonce of their own)
    r = call(tc, token, job.id, "claim", {"nonce": OTHER_NONCE, "instance_id": "1001"})
    assert r.status_code == 403 and "second claim" in r.json()["detail"], r.text
    assert "hf-value-never-to-leak" not in r.text and "session" not in r.json()
    call(tc, token, job.id, "claim", {"nonce": OTHER_NONCE + "x"})  # and again
    after = api.store.get(job.id)
    assert (after.state, after.epoch, after.reason) == (before.state, before.epoch, before.reason)
    notes = [e for e in api.store.events(job.id) if e.kind == "security"]
    assert [e.reason for e in notes] == ["second claim with the onstart token refused"] * 2
    assert [e.data["refused"] for e in notes] == [1, 2]
    for secret in (token, session, NONCE, OTHER_NONCE):
        assert all(secret not in e.model_dump_json() for e in api.store.events(job.id))
    assert call(tc, session, job.id, "heartbeat").status_code == 200, "the real agent goes on"


def test_the_onstart_token_opens_nothing_but_the_claim(client: Client) -> None:
    tc, api, job, session = running(client)
    token = api.token(job)
    ref = call(tc, session, job.id, "commit", upload(tc, session, job.id, 5, {"w": b"weights"})).json()
    for verb, body in [
        ("heartbeat", {"progress": {"step": 1}}),
        ("presign-upload", manifest(9, {"w": b"forged"})),
        ("presign-download", {}),
        ("commit", manifest(9, {"w": b"forged"})),
        ("restore-failed", {"step": 5, "prefix": ref["prefix"], "reason": "lie"}),
        ("finish", {"exit_code": 0}),
    ]:
        r = call(tc, token, job.id, verb, body)
        assert r.status_code == 401 and "session" in r.json()["detail"], (verb, r.text)
    job = api.store.get(job.id)
    assert job.state == JobState.RUNNING and job.exit_code is None, "a leaked token cannot finish the job"
    assert job.latest_checkpoint is not None and job.latest_checkpoint.step == 5


def test_a_lost_claim_answer_is_asked_again_with_the_same_nonce(client: Client) -> None:
    tc, api = client
    job = booted(api.store, count_spec())
    first = claim(tc, api, job)
    again = claim(tc, api, job)  # the agent never saw the first answer and retries with its saved nonce
    assert again == first
    assert api.store.get(job.id).state == JobState.RUNNING
    notes = [e.reason for e in api.store.events(job.id) if e.kind == "agent_reclaimed"]
    assert notes == ["agent claimed again (its first answer was lost)"]
    # a restarted container re-claims with the session, and gets no new secret
    r = call(tc, first, job.id, "claim", {"instance_id": "1001"})
    assert r.status_code == 200 and "session" not in r.json() and r.json()["run"] == job.spec.run


def test_only_a_hash_of_the_session_is_stored(client: Client) -> None:
    _tc, api, job, session = running(client)
    prefix, epoch, mac = session.split(".")
    assert (prefix, int(epoch)) == ("vfs1", job.epoch) and len(mac) >= 43  # 32 random-looking bytes
    dump = redis_dump(api)
    assert session not in dump and mac not in dump and NONCE not in dump
    assert api.token(job) not in dump


def test_a_session_opens_only_its_own_job_and_attempt(client: Client) -> None:
    tc, api, job, session = running(client)
    other = booted(api.store, count_spec(), instance_id=1002)
    claim(tc, api, other)
    assert call(tc, session, other.id, "heartbeat").status_code == 401
    forged = session[:-1] + ("A" if session[-1] != "A" else "B")
    assert call(tc, forged, job.id, "heartbeat").status_code == 401
    assert call(tc, "vfs1.1.short", job.id, "heartbeat").status_code == 401
    replace_instance(api.store, job.id, 2002)
    r = call(tc, session, job.id, "heartbeat", {})
    assert r.status_code == 409 and r.json()["action"] == "stop"


def test_a_claim_with_the_onstart_token_needs_a_nonce(client: Client) -> None:
    tc, api = client
    job = booted(api.store, count_spec())
    r = call(tc, api.token(job), job.id, "claim", {})
    assert r.status_code == 422 and "nonce" in r.json()["detail"]
    assert call(tc, api.token(job), job.id, "claim", {"nonce": "short"}).status_code == 422
    assert api.store.get(job.id).state == JobState.BOOTING


def test_upload_urls_of_a_fenced_attempt_stop_working_and_its_commit_is_refused(client: Client) -> None:
    tc, api, job, session = running(client)
    files = {"w": b"late weights"}
    answer = call(tc, session, job.id, "presign-upload", manifest(5, files)).json()
    url = answer["files"]["w"]["url"]
    exp = int(url.split("exp=", 1)[1].split("&", 1)[0])
    assert exp <= time.time() + AgentSettings().url_expiry_s + 1 and AgentSettings().url_expiry_s <= 900
    replace_instance(api.store, job.id, 2002)  # the attempt is fenced; its URLs are still unexpired
    r = tc.put(url, content=files["w"], headers=answer["files"]["w"]["headers"])
    assert r.status_code == 403 and "over" in r.json()["detail"]
    assert api.ckpt.stat(answer["prefix"] + "w") is None
    r = call(tc, session, job.id, "commit", manifest(5, files))
    assert r.status_code == 409 and api.store.get(job.id).latest_checkpoint is None


def test_the_agent_keeps_nonce_and_session_private_and_a_restart_uses_the_session(
    api: AgentApi, gpu_bin: Path, tmp_path: Path
) -> None:
    job = booted(api.store, count_spec(steps=30, every=5, sleep=0.05))
    workdir = tmp_path / "disk"
    proc = api.start_agent(job, workdir, gpu_bin, argv=["/bin/sh", "-c", build_onstart(api.url)])
    saved_file = workdir / ".vastfleet" / "claim.json"
    wait_for(lambda: api.store.get(job.id).latest_checkpoint, 20, what="a commit")
    saved = json.loads(saved_file.read_text())
    assert stat.S_IMODE(saved_file.stat().st_mode) == 0o600
    assert saved["session"].startswith("vfs1.") and len(saved["nonce"]) >= 32
    os.killpg(proc.pid, signal.SIGKILL)  # the container restarts on the same disk: the same attempt
    proc.wait()
    # The restarted agent must not need the onstart token any more: give it one that opens nothing.
    useless = api.signer.issue(job.id, job.epoch, 1001, ttl_s=-1)
    log = output(api.start_agent(job, workdir, gpu_bin, useless, argv=["/bin/sh", "-c", build_onstart(api.url)]))
    done = api.store.get(job.id)
    assert done.state == JobState.SUCCEEDED, log
    for secret in (saved["session"], saved["nonce"], api.token(job)):
        assert secret not in log
    assert not [e for e in api.store.events(job.id) if e.kind == "security"]


def test_the_agent_saves_its_nonce_before_claiming_so_a_lost_answer_is_recovered(
    api: AgentApi, gpu_bin: Path, tmp_path: Path
) -> None:
    job = booted(api.store, count_spec(steps=5, every=5, sleep=0.01))
    workdir = tmp_path / "w"
    env = api.agent_env(job, workdir, gpu_bin)
    env["VASTFLEET_API"] = f"http://127.0.0.1:{free_port()}"  # nothing listens: the claim is not answered
    workdir.mkdir()
    proc = subprocess.Popen([sys.executable, str(AGENT)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    api.procs.append(proc)
    saved_file = workdir / ".vastfleet" / "claim.json"
    nonce = wait_for(lambda: json.loads(saved_file.read_text())["nonce"], 20, what="the nonce on disk")
    assert stat.S_IMODE(saved_file.stat().st_mode) == 0o600
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # That claim did reach the API, but its answer was lost on the way back:
    lost = httpx.post(f"{api.url}/v1/agent/jobs/{job.id}/claim", json={"nonce": nonce},
                      headers={"Authorization": f"Bearer {api.token(job)}"}, timeout=10)
    assert lost.status_code == 200
    log = output(api.start_agent(job, workdir, gpu_bin))  # the same disk, the same nonce: the same session
    assert api.store.get(job.id).state == JobState.SUCCEEDED, log
    assert json.loads(saved_file.read_text())["session"] == lost.json()["session"]
