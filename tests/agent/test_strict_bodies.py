"""Strict types and size caps on every agent route: nothing an instance sends is coerced or stored unbounded.

Refusals are 422 naming the field (413 naming the limit for an oversized body), and change nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import AgentApi, Client, booted, call, count_spec, manifest, output, running
from vastfleet.queue.heartbeats import last_heartbeat
from vastfleet.spec import JobState


def raw(tc: Any, token: str, job_id: str, verb: str, text: str | bytes) -> Any:
    return tc.post(f"/v1/agent/jobs/{job_id}/{verb}", content=text,
                   headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})


def test_a_huge_ckpt_step_is_refused_by_size_and_never_stored(client: Client) -> None:
    tc, api, job, session = running(client)
    before = last_heartbeat(api.redis, job.id)
    body = '{"progress": {}, "ckpt_step": "' + "9" * 5_000_000 + '"}'  # what a heartbeat once stored
    r = raw(tc, session, job.id, "heartbeat", body)
    assert r.status_code == 413 and "8192 bytes" in r.json()["detail"], r.text[:200]
    assert last_heartbeat(api.redis, job.id) == before


@pytest.mark.parametrize(("body", "field"), [
    ({"ckpt_step": "5"}, "ckpt_step"),
    ({"ckpt_step": True}, "ckpt_step"),
    ({"ckpt_step": 5.0}, "ckpt_step"),
    ({"ckpt_step": 10**16}, "ckpt_step"),
    ({"phase": "x" * 41}, "phase"),
    ({"phase": 7}, "phase"),
    ({"progress": [1, 2]}, "progress"),
    ({"progress": {"blob": "x" * 5000}}, "progress"),
    ({"surprise": 1}, "surprise"),
])
def test_heartbeat_refuses_what_is_not_exactly_its_type(client: Client, body: dict[str, Any], field: str) -> None:
    tc, api, job, session = running(client)
    call(tc, session, job.id, "heartbeat", {"progress": {"step": 1}, "ckpt_step": 3})
    before = (api.store.get(job.id).progress, last_heartbeat(api.redis, job.id))
    r = call(tc, session, job.id, "heartbeat", body)
    assert r.status_code == 422 and f"heartbeat request: {field}" in r.json()["detail"], r.text
    assert (api.store.get(job.id).progress, last_heartbeat(api.redis, job.id)) == before


@pytest.mark.parametrize("text", [
    '{"progress": {"loss": NaN}}',
    '{"progress": {"loss": Infinity}}',
    '{"progress": {"loss": -Infinity}}',
    '{"progress": {"loss": 1e999}}',  # Python's json reads it as inf
    '{"progress": {"deep": ' + "[" * 3000 + "]" * 3000 + "}}",
])
def test_non_finite_numbers_and_deep_nesting_are_refused(client: Client, text: str) -> None:
    tc, api, job, session = running(client)
    r = raw(tc, session, job.id, "heartbeat", text)
    assert r.status_code == 422, r.text
    assert api.store.get(job.id).progress == {}


@pytest.mark.parametrize(("change", "field"), [
    ({"step": "5"}, "step"),
    ({"step": True}, "step"),
    ({"step": 5.0}, "step"),
    ({"step": 10**16}, "step"),
    ({"files": {"a": {"size": True, "sha256": "a" * 64}}}, "files.a.size"),
    ({"files": {"a": {"size": "1", "sha256": "a" * 64}}}, "files.a.size"),
    ({"files": {"a": {"size": 1, "sha256": 7}}}, "files.a.sha256"),
])
def test_manifest_types_are_strict(client: Client, change: dict[str, Any], field: str) -> None:
    tc, api, job, session = running(client)
    body = {**manifest(5, {"a": b"x"}), **change}
    for verb in ("presign-upload", "commit"):
        r = call(tc, session, job.id, verb, body)
        assert r.status_code == 422 and f"manifest: {field}" in r.json()["detail"], (verb, r.text)
    assert api.store.get(job.id).latest_checkpoint is None


def test_every_route_caps_its_body(client: Client) -> None:
    tc, api, job, session = running(client)
    many = {f"dir/{i:07d}-{'x' * 900}": {"size": 1, "sha256": "a" * 64} for i in range(9_000)}
    r = call(tc, session, job.id, "presign-upload", {"step": 1, "files": many})
    assert r.status_code == 413 and "presign-upload" in r.json()["detail"] and str(8 * 1024 * 1024) in r.text
    for verb, cap in (("claim", 16384), ("finish", 8192), ("presign-download", 1024), ("restore-failed", 8192)):
        r = raw(tc, session, job.id, verb, json.dumps({"error": "x" * (cap + 10)}))
        assert r.status_code == 413 and str(cap) in r.json()["detail"], (verb, r.text)
    assert api.store.get(job.id).state == JobState.RUNNING


@pytest.mark.parametrize(("body", "field"), [
    ({"exit_code": True}, "exit_code"),
    ({"exit_code": "0"}, "exit_code"),
    ({"exit_code": 1.0}, "exit_code"),
    ({"exit_code": 1000}, "exit_code"),
    ({"exit_code": 1, "error": "e" * 1001}, "error"),
    ({"exit_code": None, "error": "x", "fault": "nobody"}, "fault"),
    ({"exit_code": 3, "error": "x", "fault": "host"}, "fault host"),
    ({}, "exit_code or an error"),
])
def test_finish_refuses_what_is_not_exactly_its_type(client: Client, body: dict[str, Any], field: str) -> None:
    tc, api, job, session = running(client)
    r = call(tc, session, job.id, "finish", body)
    assert r.status_code == 422 and field in r.json()["detail"], r.text
    job = api.store.get(job.id)
    assert job.state == JobState.RUNNING and job.exit_code is None


@pytest.mark.parametrize(("body", "field"), [
    ({"gpus": "RTX 4090"}, "gpus"),
    ({"gpus": ["x" * 201]}, "gpus.0"),
    ({"gpus": ["g"] * 17}, "gpus"),
    ({"instance_id": 1.5}, "instance_id"),
    ({"instance_id": True}, "instance_id"),
    ({"agent": "v" * 41}, "agent"),
])
def test_claim_refuses_what_is_not_exactly_its_type(client: Client, body: dict[str, Any], field: str) -> None:
    tc, api = client
    job = booted(api.store, count_spec())
    r = call(tc, api.token(job), job.id, "claim", {"nonce": "n" * 20, **body})
    assert r.status_code == 422 and f"claim request: {field}" in r.json()["detail"], r.text
    assert api.store.get(job.id).state == JobState.BOOTING


def test_the_agent_drops_non_finite_numbers_from_progress_and_keeps_beating(
    api: AgentApi, gpu_bin: Path, tmp_path: Path
) -> None:
    # The job writes what Python's json happily writes: NaN, Infinity. The agent sends finite numbers only,
    # so its heartbeats are accepted (a refused heartbeat would look like a dead agent).
    run = ("python3 -c \"import json,os,time; p=os.environ['VASTFLEET_PROGRESS_FILE']; "
           "json.dump({'step': 3, 'loss': float('nan'), 'best': float('inf'), 'hist': [1.5, float('-inf')]},"
           " open(p, 'w')); time.sleep(1.5)\"")
    job = booted(api.store, count_spec(run=run, checkpoint={"required": False, "interval": 30}))
    log = output(api.start_agent(job, tmp_path / "w", gpu_bin))
    done = api.store.get(job.id)
    assert done.state == JobState.SUCCEEDED, log
    assert done.progress == {"step": 3, "loss": None, "best": None, "hist": [1.5, None]}, log
